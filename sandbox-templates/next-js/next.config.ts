import type { NextConfig } from "next";

// CodeKraft's local sandboxes serve the preview under `/preview/{sandbox_id}`, on an origin of
// the sandbox's own (the preview listener's proxy), so the base path and the allowed dev origins
// come from the environment.
const basePath = process.env.NEXT_BASE_PATH || undefined;
const allowedDevOrigins = (process.env.NEXT_ALLOWED_DEV_ORIGINS || "")
  .split(",")
  .map((origin) => origin.trim())
  .filter(Boolean);

const nextConfig: NextConfig = {
  basePath,
  allowedDevOrigins,
  devIndicators: false,
};

export default nextConfig;
