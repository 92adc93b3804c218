package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"

	"github.com/dso-project/dso/internal/api/events"
)

var (
	// ErrAgentNotRunning means nothing answers on the agent's address.
	ErrAgentNotRunning = errors.New("the DSO agent is not running")
	// ErrForbidden means the agent refused the caller.
	ErrForbidden = errors.New("the DSO agent refused this caller")
)

// Client talks to the agent's local API (over its socket) or REST API.
type Client struct {
	http  *http.Client
	base  string
	where string // for messages: the socket path or the URL
	token string
}

// NewClient returns a client for the local API on the unix socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{http: &http.Client{Transport: tr}, base: "http://dso", where: path}
}

// NewRESTClient returns a client for the REST API at baseURL (e.g.
// http://127.0.0.1:8471), sending token as a bearer token when set.
func NewRESTClient(baseURL, token string) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("API address %q: want a URL like http://127.0.0.1:8471", baseURL)
	}
	return &Client{http: &http.Client{}, base: strings.TrimRight(baseURL, "/"), where: baseURL, token: token}, nil
}

// Health returns the agent's health.
func (c *Client) Health(ctx context.Context) (AgentStatus, error) {
	var h AgentStatus
	err := c.do(ctx, http.MethodGet, "/health", nil, &h, http.StatusOK, http.StatusServiceUnavailable)
	return h, err
}

// Status returns the agent's full status (local API only).
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/status", nil, &s, http.StatusOK)
	return s, err
}

// Check asks the agent to check the named secrets now (all when none).
func (c *Client) Check(ctx context.Context, names ...string) error {
	body, _ := json.Marshal(checkRequest{Secrets: names})
	return c.do(ctx, http.MethodPost, "/check", body, nil, http.StatusAccepted)
}

// Events calls fn for up to history past events and then, when follow is
// set, for each new one until ctx ends (nil) or fn returns an error.
func (c *Client) Events(ctx context.Context, history int, follow bool, fn func(events.Event) error) error {
	q := url.Values{"history": {strconv.Itoa(history)}, "follow": {strconv.FormatBool(follow)}}
	resp, err := c.send(ctx, http.MethodGet, "/events?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c.statusError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0 && data != nil:
			var e events.Event
			if err := json.Unmarshal(data, &e); err != nil {
				return fmt.Errorf("agent at %s sent a malformed event: %w", c.where, err)
			}
			data = nil
			if err := fn(e); err != nil {
				return err
			}
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append(data, line[len("data: "):]...)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("event stream from %s: %w", c.where, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("%w: nothing listens on %s (start it with `sudo systemctl start dso-agent`, or `docker dso agent` in local mode)", ErrAgentNotRunning, c.where)
		case errors.Is(err, syscall.EACCES):
			return nil, fmt.Errorf("%w: permission denied on %s (add your user to the %q group: sudo usermod -aG %s $USER)", ErrForbidden, c.where, GroupName, GroupName)
		}
		return nil, fmt.Errorf("reaching the agent at %s: %w", c.where, err)
	}
	return resp, nil
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any, okCodes ...int) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	for _, code := range okCodes {
		if resp.StatusCode == code {
			if out == nil {
				return nil
			}
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				return fmt.Errorf("agent at %s sent a malformed answer to %s: %w", c.where, path, err)
			}
			return nil
		}
	}
	return c.statusError(resp)
}

func (c *Client) statusError(resp *http.Response) error {
	var eb errorBody
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := strings.TrimSpace(string(raw))
	if json.Unmarshal(raw, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	}
	switch resp.StatusCode {
	case http.StatusForbidden, http.StatusUnauthorized:
		return fmt.Errorf("%w: %s", ErrForbidden, msg)
	}
	return fmt.Errorf("agent at %s answered %s: %s", c.where, resp.Status, msg)
}
