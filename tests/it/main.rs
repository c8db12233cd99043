mod sandbox_local;
