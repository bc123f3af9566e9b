# syntax=docker/dockerfile:1

# Build a static binary.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG BUILD_DATE=unknown
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.buildDate=${BUILD_DATE}" \
      -o /out/guacproxy ./cmd/guacproxy

# Run it as a non-root user on a base with no shell or package manager.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
ARG BUILD_DATE=unknown
LABEL org.opencontainers.image.title="guacproxy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${BUILD_DATE}"
COPY --from=build /out/guacproxy /usr/local/bin/guacproxy
# The numeric form of distroless's "nonroot" user, so that Kubernetes can
# verify runAsNonRoot without being told the UID.
USER 65532:65532
EXPOSE 8080 9091
# serve and healthcheck both read the configuration named here, so the health
# check finds admin_listen wherever the file puts it.
ENV GUACPROXY_CONFIG=/etc/guacproxy/config.yaml
# Exec form: there is no shell to run a command string. Kubernetes ignores
# HEALTHCHECK and uses the pod's probes instead.
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
      CMD ["/usr/local/bin/guacproxy", "healthcheck", "--timeout", "2s"]
ENTRYPOINT ["/usr/local/bin/guacproxy"]
CMD ["serve"]
