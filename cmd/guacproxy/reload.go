package main

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/guacproxy/guacproxy/config"
)

// reloadDebounce groups the several file events of one change (an editor's
// write and rename, Kubernetes' symlink swap) into one reload.
const reloadDebounce = 250 * time.Millisecond

// requestReload asks the serving loop to reload the configuration. Requests
// made while one is pending are merged into it.
func (s *server) requestReload() {
	select {
	case s.reloads <- struct{}{}:
	default:
	}
}

// reload reads the configuration file again and applies what can change
// while serving: identities (accounts, passwords, matchers, allow rules),
// trusted proxies and the shutdown grace. An identity whose account or
// password changed, or that was removed, has its token retired; tokens of
// unchanged identities stay. A configuration that fails validation is
// rejected whole, with every problem logged, and the old one keeps serving.
func (s *server) reload() {
	cfg, err := config.Load(s.configPath)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			problems := make([]string, len(errs))
			for i, e := range errs {
				problems[i] = e.Error()
			}
			s.log.Error("configuration rejected; the previous one stays in force",
				zap.Strings("problems", problems))
		} else {
			s.log.Error("configuration rejected; the previous one stays in force", zap.Error(err))
		}
		return
	}
	ids, names := proxyIdentities(cfg)
	if err := s.handler.SetIdentities(ids, cfg.TrustedProxyNets); err != nil {
		s.log.Error("configuration rejected; the previous one stays in force", zap.Error(err))
		return
	}
	s.metrics.Init(names)

	// Revoked at once, or when the identity's last tunnel closes.
	retired := s.cache.SetIdentities(cacheIdentities(ids))
	if fields := restartFields(s.cfg, cfg); len(fields) > 0 {
		s.log.Warn("some changes take effect only after a restart", zap.Strings("settings", fields))
	}
	s.cfg.Identities, s.cfg.TrustedProxies = cfg.Identities, cfg.TrustedProxies
	s.cfg.TrustedProxyNets, s.cfg.ShutdownGrace = cfg.TrustedProxyNets, cfg.ShutdownGrace
	s.watchFiles(cfg)
	s.log.Info("configuration reloaded", zap.Int("identities", len(cfg.Identities)),
		zap.Strings("tokens_retired", retired))
}

// restartFields names the settings that differ between a and b and are only
// read at start.
func restartFields(a, b *config.Config) []string {
	type setting struct {
		name string
		a, b any
	}
	var out []string
	for _, s := range []setting{
		{"listen", a.Listen, b.Listen},
		{"admin_listen", a.AdminListen, b.AdminListen},
		{"guacamole.url", a.Guacamole.URL, b.Guacamole.URL},
		{"guacamole.ca_file", a.Guacamole.CAFile, b.Guacamole.CAFile},
		{"guacamole.timeout", a.Guacamole.Timeout, b.Guacamole.Timeout},
		{"guacamole.request_timeout", a.Guacamole.RequestTimeout, b.Guacamole.RequestTimeout},
		{"guacamole.session_timeout", a.Guacamole.SessionTimeout, b.Guacamole.SessionTimeout},
		{"guacamole.ban", a.Guacamole.Ban, b.Guacamole.Ban},
		{"tokens", a.Tokens, b.Tokens},
		{"log", a.Log, b.Log},
		{"tls", [3]string{a.TLS.CertFile, a.TLS.KeyFile, a.TLS.ClientCAFile},
			[3]string{b.TLS.CertFile, b.TLS.KeyFile, b.TLS.ClientCAFile}},
	} {
		if !reflect.DeepEqual(s.a, s.b) {
			out = append(out, s.name)
		}
	}
	return out
}

// watchConfig reloads when the configuration file or a password file
// changes, until ctx ends. It watches the files' directories rather than
// the files: editors replace files by renaming, and Kubernetes updates a
// mounted ConfigMap or Secret by swapping a symlink, which a watch on the
// old file would never see.
func (s *server) watchConfig(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	s.watcher = w
	s.watchFiles(s.cfg)
	go func() {
		defer w.Close()
		var debounce <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write) {
					continue
				}
				debounce = time.After(reloadDebounce)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				s.log.Warn("watching the configuration", zap.Error(err))
			case <-debounce:
				debounce = nil
				s.requestReload()
			}
		}
	}()
	return nil
}

// watchFiles adds the directories of cfg's files to the watch. Adding a
// directory twice is harmless.
func (s *server) watchFiles(cfg *config.Config) {
	if s.watcher == nil {
		return
	}
	files := []string{s.configPath}
	for _, id := range cfg.Identities {
		if id.PasswordFile != "" {
			files = append(files, id.PasswordFile)
		}
	}
	for _, f := range files {
		dir := filepath.Dir(f)
		if err := s.watcher.Add(dir); err != nil {
			s.log.Warn("cannot watch for configuration changes", zap.String("dir", dir), zap.Error(err))
		}
	}
}
