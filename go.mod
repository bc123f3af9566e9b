module github.com/guacproxy/guacproxy

go 1.26.0

require (
	github.com/gorilla/mux v1.8.1
	github.com/patrickmn/go-cache v2.1.0+incompatible
	go.uber.org/goleak v1.3.0
	go.uber.org/zap v1.28.0
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/sync v0.25.0
)

require go.uber.org/multierr v1.10.0 // indirect
