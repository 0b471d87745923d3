# The shardpipe CLI image: every service in docker-compose.yml runs a `shardpipe` command.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npx tsc -p tsconfig.json && npm prune --omit=dev
ENTRYPOINT ["node", "bin/shardpipe.js"]
