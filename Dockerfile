# syntax=docker/dockerfile:1

# Build a static binary.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/guacproxy ./cmd/guacproxy

# Run it as a non-root user on a base with no shell or package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/guacproxy /usr/local/bin/guacproxy
USER nonroot:nonroot
EXPOSE 8080 9091
ENTRYPOINT ["/usr/local/bin/guacproxy"]
CMD ["serve", "--config", "/etc/guacproxy/config.yaml"]
