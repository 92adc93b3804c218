package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/dso-project/dso/internal/backoff"
	"github.com/dso-project/dso/internal/clock"
	"github.com/dso-project/dso/internal/provider"
)

// ensureLogin logs in with AppRole if that is the auth method and no
// login has succeeded yet.
func (p *Provider) ensureLogin(ctx context.Context) error {
	if p.approle == nil {
		return nil
	}
	p.loginMu.Lock()
	defer p.loginMu.Unlock()
	if p.loggedIn {
		return nil
	}
	_, err := p.login(ctx)
	return err
}

// login logs in with AppRole and sets the client's token. The caller holds
// loginMu.
func (p *Provider) login(ctx context.Context) (*api.Secret, error) {
	ar := p.approle
	secretID := ar.SecretID
	if ar.SecretIDFile != "" {
		b, err := os.ReadFile(ar.SecretIDFile)
		if err != nil {
			return nil, fmt.Errorf("provider %q: approle secret_id_file: %w", p.name, err)
		}
		secretID = strings.TrimSpace(string(b))
	}
	where := "auth/" + ar.Mount + "/login"
	s, err := p.client.Logical().WriteWithContext(ctx, where, map[string]any{"role_id": ar.RoleID, "secret_id": secretID})
	if err != nil {
		e := p.classify(where, err).(*provider.Error)
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
			e.Kind = provider.ErrDenied // Vault's answer to a wrong role or secret id
		}
		e.Err = fmt.Errorf("approle login: %w", e.Err)
		return nil, e
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("provider %q: approle login at %s: no token in the answer", p.name, where)
	}
	p.client.SetToken(s.Auth.ClientToken)
	p.loggedIn = true
	p.log.Info("vault: logged in with approle", "provider", p.name, "ttl", time.Duration(s.Auth.LeaseDuration)*time.Second)
	return s, nil
}

// Run keeps the token alive until ctx ends: it renews a renewable token
// before it expires and, with AppRole, logs in again when the token can be
// renewed no further. A token that is not renewable (a root token, say) is
// left alone. Run returns nil when ctx ends.
func (p *Provider) Run(ctx context.Context) error {
	b := backoff.New(nil, p.retry.Backoff, p.retry.MaxBackoff)
	for ctx.Err() == nil {
		auth, err := p.currentAuth(ctx)
		if err != nil {
			wait := b.Next()
			p.log.Warn("vault: cannot look up the token, will retry", "provider", p.name, "err", err, "in", wait)
			if !sleep(ctx, wait) {
				return nil
			}
			continue
		}
		b.Reset()
		if !auth.Auth.Renewable {
			if p.approle == nil || auth.Auth.LeaseDuration == 0 {
				p.log.Info("vault: token is not renewable or never expires; nothing to renew", "provider", p.name)
				<-ctx.Done()
				return nil
			}
			// Log in again shortly before the token expires.
			ttl := time.Duration(auth.Auth.LeaseDuration) * time.Second
			if !sleep(ctx, ttl*2/3) {
				return nil
			}
			p.relogin(ctx)
			continue
		}
		if !p.watch(ctx, auth) {
			return nil
		}
		if p.approle == nil {
			p.log.Warn("vault: token can be renewed no further and will expire; configure approle or a periodic token", "provider", p.name)
			<-ctx.Done()
			return nil
		}
		p.relogin(ctx)
	}
	return nil
}

// watch renews auth until it can be renewed no further (true) or ctx ends (false).
func (p *Provider) watch(ctx context.Context, auth *api.Secret) bool {
	w, err := p.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: auth})
	if err != nil {
		p.log.Warn("vault: cannot watch the token", "provider", p.name, "err", err)
		return sleep(ctx, p.retry.Backoff)
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case err := <-w.DoneCh():
			if err != nil && !errors.Is(err, api.ErrLifetimeWatcherNotRenewable) {
				p.log.Warn("vault: token renewal failed", "provider", p.name, "err", err)
			}
			return true
		case r := <-w.RenewCh():
			ttl := time.Duration(0)
			if r.Secret != nil && r.Secret.Auth != nil {
				ttl = time.Duration(r.Secret.Auth.LeaseDuration) * time.Second
			}
			p.log.Info("vault: token renewed", "provider", p.name, "ttl", ttl)
		}
	}
}

func (p *Provider) relogin(ctx context.Context) {
	if err := p.forceLogin(ctx); err != nil {
		p.log.Warn("vault: approle login failed, will retry", "provider", p.name, "err", err)
		sleep(ctx, p.retry.Backoff)
	}
}

// forceLogin logs in with AppRole even if a login succeeded before.
func (p *Provider) forceLogin(ctx context.Context) error {
	p.loginMu.Lock()
	defer p.loginMu.Unlock()
	if _, err := p.login(ctx); err != nil {
		p.loggedIn = false
		return err
	}
	return nil
}

// currentAuth describes the client's token as an auth secret for the
// lifetime watcher, logging in first with AppRole if needed.
func (p *Provider) currentAuth(ctx context.Context) (*api.Secret, error) {
	if err := p.ensureLogin(ctx); err != nil {
		return nil, err
	}
	s, err := p.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, p.classify("auth/token/lookup-self", err)
	}
	ttl, err := s.TokenTTL()
	if err != nil {
		return nil, fmt.Errorf("provider %q: token lookup: ttl: %w", p.name, err)
	}
	renewable, err := s.TokenIsRenewable()
	if err != nil {
		return nil, fmt.Errorf("provider %q: token lookup: renewable: %w", p.name, err)
	}
	lease := int(ttl.Seconds())
	if s.Data["expire_time"] == nil {
		renewable, lease = false, 0 // a token that never expires needs no renewal
	} else if lease < 1 {
		lease = 1 // under a second left: the ttl reads 0
	}
	return &api.Secret{Auth: &api.SecretAuth{
		ClientToken:   p.client.Token(),
		Renewable:     renewable,
		LeaseDuration: lease,
	}}, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	return clock.Sleep(ctx, clock.RealClock{}, d) == nil
}
