# E2B template for the Next.js apps CodeKraft generates. Build context: sandbox-templates/next-js/
# (see sandbox-templates/E2B.md). E2B supports Debian-based images only; the sandbox user is
# `user` with home /home/user.
FROM node:22-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates git procps \
    && rm -rf /var/lib/apt/lists/*

ENV NEXT_TELEMETRY_DISABLED=1

COPY compile_page.sh /compile_page.sh
RUN chmod +x /compile_page.sh

# The app root the backend reads and writes (APP_ROOT in src/sandbox/e2b/mod.rs).
WORKDIR /home/user/app

# Dependencies first, so editing the app does not reinstall them.
COPY package.json package-lock.json* ./
RUN if [ -f package-lock.json ]; then npm ci; else npm install; fi \
    && npm cache clean --force

COPY . .
RUN rm -rf e2b.Dockerfile e2b.toml compile_page.sh .next

# Commands run as `user` (envd), and the image is built as root: let `user` write the app,
# its node_modules (npm install) and its home (npm cache).
RUN chmod -R a+rwX /home/user
