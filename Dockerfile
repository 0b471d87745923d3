# The shardpipe CLI image: every service in docker-compose.yml runs a `shardpipe` command.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npx tsc -p tsconfig.json && npm prune --omit=dev
# Two glibc malloc arenas: less freed memory held per thread, for every service (common/malloc-arenas.ts).
ENV MALLOC_ARENA_MAX=2
ENTRYPOINT ["node", "bin/shardpipe.js"]
