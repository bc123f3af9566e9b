package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/guacproxy/guacproxy/config"
)

// version, commit and buildDate describe the build. The Dockerfile stamps
// them with -ldflags "-X main.version=… -X main.commit=… -X main.buildDate=…".
var (
	version   = "dev"
	commit    = "unknown"
	buildDate = "unknown"
)

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

const usage = `guacproxy logs in to Apache Guacamole for the tools that call it.

Usage:
  guacproxy serve --config FILE   run the proxy (FILE may also come from GUACPROXY_CONFIG)
  guacproxy check --config FILE   validate the configuration and exit
  guacproxy demo [--listen ADDR]  run against a built-in Guacamole emulator
  guacproxy healthcheck [--url URL] [--timeout D]
                                  exit 0 if /readyz answers 200, 1 otherwise
  guacproxy version               print the version
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "healthcheck":
		return cmdHealthcheck(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "guacproxy %s (%s, %s)\n", version, commit, buildDate)
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "guacproxy: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// loadConfig parses the --config flag (or GUACPROXY_CONFIG) and loads the
// file. It prints every problem and returns false on failure.
func loadConfig(name string, args []string, stderr io.Writer) (cfg *config.Config, path string, ok bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	pathFlag := fs.String("config", os.Getenv("GUACPROXY_CONFIG"),
		"configuration file (default $GUACPROXY_CONFIG)")
	if err := fs.Parse(args); err != nil {
		return nil, "", false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "guacproxy %s: unexpected arguments %q\n", name, fs.Args())
		return nil, "", false
	}
	if *pathFlag == "" {
		fmt.Fprintf(stderr, "guacproxy %s: no configuration: pass --config FILE or set GUACPROXY_CONFIG\n", name)
		return nil, "", false
	}
	cfg, err := config.Load(*pathFlag)
	if err != nil {
		fmt.Fprintf(stderr, "guacproxy %s: %s is not valid:\n", name, *pathFlag)
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				fmt.Fprintf(stderr, "  %s\n", e.Error())
			}
		} else {
			fmt.Fprintf(stderr, "  %v\n", err)
		}
		return nil, "", false
	}
	return cfg, *pathFlag, true
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	cfg, _, ok := loadConfig("check", args, stderr)
	if !ok {
		return exitUsage
	}
	fmt.Fprintf(stdout, "configuration is valid: %d identities, Guacamole at %s\n",
		len(cfg.Identities), cfg.Guacamole.URL)
	return exitOK
}

func cmdServe(args []string, stderr io.Writer) int {
	cfg, path, ok := loadConfig("serve", args, stderr)
	if !ok {
		return exitUsage
	}
	out := zapcore.Lock(zapcore.AddSync(stderr))
	logger, err := newLoggerTo(cfg.Log, out)
	if err != nil {
		fmt.Fprintf(stderr, "guacproxy serve: %v\n", err)
		return exitUsage
	}
	defer func() { _ = logger.Sync() }()
	var audit *zap.Logger
	if cfg.Log.Audit {
		var stopAudit func()
		audit, stopAudit = newAuditLogger(cfg.Log.Format, out)
		defer stopAudit()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serveUntilDone(ctx, cfg, path, logger, audit)
}

// serveUntilDone runs guacproxy until ctx ends and maps the outcome onto an
// exit code. SIGHUP reloads the configuration from path.
func serveUntilDone(ctx context.Context, cfg *config.Config, path string, logger, audit *zap.Logger) int {
	srv, err := newServer(cfg, logger, audit)
	if err != nil {
		logger.Error("cannot start", zap.Error(err))
		return exitUsage
	}
	srv.configPath = path
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer func() { signal.Stop(hup); close(hup) }()
	go func() {
		for range hup {
			srv.requestReload()
		}
	}()
	if err := srv.run(ctx); err != nil {
		logger.Error("stopped with an error", zap.Error(err))
		return exitRuntime
	}
	return exitOK
}

// newLogger builds the process logger: JSON for machines, console for people.
func newLogger(c config.Log, w io.Writer) (*zap.Logger, error) {
	return newLoggerTo(c, zapcore.Lock(zapcore.AddSync(w)))
}

func newLoggerTo(c config.Log, out zapcore.WriteSyncer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	return newZap(c.Format, level, out), nil
}

// newAuditLogger builds the audit logger: the same format and output as the
// process logger, but always at info, so that log.level does not silence
// it. One line per request is the busiest log there is, so its lines are
// buffered and written at least once a second, in whole lines through out's
// lock; stop writes what is left.
func newAuditLogger(format string, out zapcore.WriteSyncer) (*zap.Logger, func()) {
	buf := &zapcore.BufferedWriteSyncer{WS: out, Size: 64 << 10, FlushInterval: time.Second}
	return newZap(format, zapcore.InfoLevel, buf), func() { _ = buf.Stop() }
}

func newZap(format string, level zapcore.Level, out zapcore.WriteSyncer) *zap.Logger {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "time"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, out, level), zap.ErrorOutput(out))
}
