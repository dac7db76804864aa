# Gatehouse: one image for every role (gatehouse proxy | ca serve | inject serve).
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# The `node` devDependency brings Node 24 for scripts on machines that lack it; the image has it.
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# Non-root, fixed UID so a pod securityContext (runAsNonRoot, runAsUser 1337) matches.
USER 1337:1337
EXPOSE 15006 15001 15020 15443
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["--help"]
