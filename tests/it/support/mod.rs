pub mod fake_e2b;
