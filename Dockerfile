# Gatehouse: one image for every role. The entrypoint is `gatehouse`, so a pod's args are the
# subcommand and its flags: ["proxy", ...], ["ca", "serve", ...], ["inject", "serve", ...].
#
#   docker build -t gatehouse:0.1.0 .                                  the runtime image (default target)
#   docker build --target capture -t gatehouse-capture:0.1.0 .         + iptables, for gatehouse.io/capture: iptables
#
# Checked without a Docker engine by test/dockerfile.test.ts (every COPY source exists; the runtime
# command runs from a clean `npm ci --omit=dev`, every base image is pinned by digest).
#
# Base images are pinned by digest, not tag: a tag moves, so the same Dockerfile could build a
# different image tomorrow. The tag stays in front of the digest for people (Docker ignores it when a
# digest is given). node:24-bookworm-slim is Node 24.18.0 here; to move to a newer build, take the
# index digest of the tag (`docker buildx imagetools inspect node:24-bookworm-slim`, or `crane digest`)
# and replace it in all three stages at once (test/dockerfile.test.ts checks they agree), or let
# Renovate/Dependabot's docker ecosystem do it.

# --- build: compile TypeScript to dist/ (Node 24, full npm toolchain) ---
FROM node:24-bookworm-slim@sha256:6f7b03f7c2c8e2e784dcf9295400527b9b1270fd37b7e9a7285cf83b6951452d AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: the `node` devDependency's install script would fetch a second Node 24 that this
# image already has; no other dependency needs an install script.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN node node_modules/typescript/bin/tsc -p tsconfig.build.json

# --- deps: production dependencies only, from the lockfile ---
# A separate clean install (not a prune of the build stage), so no devDependency, and in particular
# not the `node` package's Node binary, can reach the runtime image.
FROM node:24-bookworm-slim@sha256:6f7b03f7c2c8e2e784dcf9295400527b9b1270fd37b7e9a7285cf83b6951452d AS deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts

# --- capture: the init container for gatehouse.io/capture: iptables ---
# Needs iptables-restore, which the distroless runtime does not have. Debian's iptables package uses
# the nft backend. Runs as root with NET_ADMIN/NET_RAW only, and only until the rules are in place.
FROM node:24-bookworm-slim@sha256:6f7b03f7c2c8e2e784dcf9295400527b9b1270fd37b7e9a7285cf83b6951452d AS capture
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /src/package.json ./
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["capture", "iptables", "--dry-run"]

# --- runtime (default target): proxy, ca serve, inject serve ---
# gcr.io/distroless/nodejs24-debian12 rather than node:24-bookworm-slim: it holds Node 24, glibc,
# CA certificates and tzdata, and nothing else (no shell, no package manager, no npm, no coreutils),
# so a compromised sidecar finds no tools, and there are far fewer packages to patch. Gatehouse needs
# no shell at run time: every role is one `node` process. Debugging uses `kubectl debug` with an
# ephemeral container instead of a shell in the image.
FROM gcr.io/distroless/nodejs24-debian12@sha256:b35a10df56aa17825e81e836ff70fe3c27002809dd94e6bfd655ed05bac52230 AS runtime
ENV NODE_ENV=production
# Heap sizes for a 256Mi container and the malloc arena cap (src/inject/node-options.ts; the injector
# sets them per memory limit).
ENV NODE_OPTIONS="--max-semi-space-size=8 --max-old-space-size=192"
ENV MALLOC_ARENA_MAX=2
WORKDIR /app
COPY --from=deps /src/package.json ./
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# Non-root, numeric (no passwd entry needed), fixed so that pod securityContexts (runAsUser 1337,
# runAsNonRoot) and the injector's proxyUid match it. Files stay root-owned: the process cannot
# modify its own code.
USER 1337:1337
EXPOSE 15006 15001 15020 15443 8443
ENTRYPOINT ["/nodejs/bin/node", "/app/dist/cli.js"]
CMD ["--help"]
