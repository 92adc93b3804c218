package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// Registration is what `docker dso up` tells the agent over its socket
// before it creates a project's containers: which dso.yaml they use. The
// agent takes this from a caller the kernel names (SO_PEERCRED), never from
// a container's labels, which whoever creates a container can write.
type Registration struct {
	Project string `json:"project"`
	// Config is the absolute path of the project's dso.yaml; "" for the
	// agent's own configuration.
	Config string `json:"config,omitempty"`
	// Containers are the IDs of containers of the project the caller
	// created: the agent serves only registered containers (and its own).
	Containers []string `json:"containers,omitempty"`
}

// ErrRegistrationRefused wraps the reasons the agent refuses a registration
// to a caller (answered 403); other errors are the request's fault (400).
var ErrRegistrationRefused = errors.New("registration refused")

// Registrar handles a registration from peer.
type Registrar func(ctx context.Context, peer Peer, r Registration) error

func registerHandler(register Registrar) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, ok := readBody(w, r)
		if !ok {
			return
		}
		var reg Registration
		if err := json.Unmarshal(body, &reg); err != nil {
			writeError(w, http.StatusBadRequest, `the body must be JSON like {"project":"name","config":"/abs/dso.yaml"}`)
			return
		}
		peer, _ := r.Context().Value(peerKey{}).(Peer)
		if err := register(r.Context(), peer, reg); err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, ErrRegistrationRefused) {
				code = http.StatusForbidden
			}
			writeError(w, code, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, reg)
	}
}

// Register tells the agent which dso.yaml the containers of a project use.
func (c *Client) Register(ctx context.Context, r Registration) error {
	body, _ := json.Marshal(r)
	return c.do(ctx, http.MethodPost, "/register", body, nil, http.StatusOK)
}
