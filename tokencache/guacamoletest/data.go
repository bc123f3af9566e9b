package guacamoletest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// maxBodyBytes bounds the JSON bodies the emulator reads.
const maxBodyBytes = 1 << 20

// sampleLastActive is a fixed "last used" time, in milliseconds since the
// epoch as Guacamole sends dates, so responses are reproducible.
const sampleLastActive int64 = 1767225600000 // 2026-01-01T00:00:00Z

// connection is a stored connection with its parameters.
type connection struct {
	name             string
	identifier       string
	parentIdentifier string
	protocol         string
	parameters       map[string]*string
	attributes       map[string]*string
	lastActive       *int64
}

// apiConnection is a connection as Guacamole serializes it: fields in
// Guacamole's order, and null fields left out. Parameters only appear where
// Guacamole includes them. Pointers keep "absent" apart from "empty" when a
// posted connection is echoed back.
type apiConnection struct {
	Name              *string            `json:"name,omitempty"`
	Identifier        *string            `json:"identifier,omitempty"`
	ParentIdentifier  *string            `json:"parentIdentifier,omitempty"`
	Protocol          *string            `json:"protocol,omitempty"`
	Parameters        map[string]*string `json:"parameters,omitzero"`
	Attributes        map[string]*string `json:"attributes,omitzero"`
	SharingProfiles   json.RawMessage    `json:"sharingProfiles,omitzero"`
	ActiveConnections int                `json:"activeConnections"`
	LastActive        *int64             `json:"lastActive,omitempty"`
}

// apiConnectionGroup is a connection group as Guacamole serializes it.
type apiConnectionGroup struct {
	Name                  string               `json:"name"`
	Identifier            string               `json:"identifier"`
	ParentIdentifier      string               `json:"parentIdentifier,omitempty"`
	Type                  string               `json:"type"`
	ActiveConnections     int                  `json:"activeConnections"`
	ChildConnectionGroups []apiConnectionGroup `json:"childConnectionGroups,omitzero"`
	ChildConnections      []apiConnection      `json:"childConnections,omitzero"`
	Attributes            map[string]*string   `json:"attributes"`
}

// apiUser is a user as Guacamole serializes it.
type apiUser struct {
	Username   string             `json:"username"`
	Attributes map[string]*string `json:"attributes"`
}

func strPtr(s string) *string { return &s }

// sampleConnections returns the connections every Server starts with, and
// the next free identifier.
func sampleConnections() (map[string]*connection, int) {
	last := sampleLastActive
	conns := map[string]*connection{
		"1": {
			name:             "demo-ssh",
			identifier:       "1",
			parentIdentifier: "ROOT",
			protocol:         "ssh",
			parameters: map[string]*string{
				"hostname": strPtr("10.0.0.10"),
				"port":     strPtr("22"),
			},
			attributes: map[string]*string{},
			lastActive: &last,
		},
		"2": {
			name:             "demo-rdp",
			identifier:       "2",
			parentIdentifier: "ROOT",
			protocol:         "rdp",
			parameters: map[string]*string{
				"hostname": strPtr("10.0.0.20"),
				"port":     strPtr("3389"),
			},
			attributes: map[string]*string{},
			lastActive: &last,
		},
	}
	return conns, 3
}

// api returns c as Guacamole lists it, without parameters.
func (c *connection) api() apiConnection {
	return apiConnection{
		Name:             strPtr(c.name),
		Identifier:       strPtr(c.identifier),
		ParentIdentifier: strPtr(c.parentIdentifier),
		Protocol:         strPtr(c.protocol),
		Attributes:       c.attributes,
		LastActive:       c.lastActive,
	}
}

// sessionResource handles {base}/api/session/{sub}. As in Guacamole, the
// token is checked before anything else, and a valid token's idle timer is
// reset even if the rest of the request fails.
func (s *Server) sessionResource(r *http.Request, sub string) reply {
	// Read any body before taking the lock, so a slow client cannot stall
	// other requests.
	var body []byte
	if r.Body != nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, maxBodyBytes))
		if err != nil {
			return errInternal()
		}
	}

	tok := requestToken(r)
	now := s.opts.Clock()
	s.mu.Lock()
	defer s.mu.Unlock()

	sess, ok := s.lookupLocked(tok, now, true)
	if !ok {
		return errInvalidToken()
	}

	parts := strings.Split(strings.Trim(sub, "/"), "/")
	switch {
	case len(parts) == 1 && parts[0] == "tunnels":
		if r.Method != http.MethodGet {
			return methodNotAllowed(http.MethodGet)
		}
		// No tunnels are ever open in the emulator.
		return jsonReply(http.StatusOK, map[string]any{})
	case len(parts) >= 2 && parts[0] == "data":
		if parts[1] != s.opts.DataSource {
			return errUnknownDataSource(parts[1])
		}
		return s.dataResourceLocked(r, sess, parts[2:], body)
	}
	return notFound()
}

// dataResourceLocked handles the paths under data/{ds}/. The caller must
// hold s.mu.
func (s *Server) dataResourceLocked(r *http.Request, sess *session,
	parts []string, body []byte) reply {

	if len(parts) == 0 {
		return notFound()
	}

	switch parts[0] {
	case "connections":
		return s.connectionsLocked(r, parts[1:], body)
	case "self":
		if len(parts) != 1 {
			return notFound()
		}
		if r.Method != http.MethodGet {
			return methodNotAllowed(http.MethodGet)
		}
		return jsonReply(http.StatusOK, apiUser{
			Username:   sess.username,
			Attributes: map[string]*string{},
		})
	case "users":
		if len(parts) != 1 {
			return notFound()
		}
		if r.Method != http.MethodGet {
			return methodNotAllowed(http.MethodGet)
		}
		if !s.users[sess.username].Admin {
			return errObjectDenied()
		}
		users := make(map[string]apiUser, len(s.users))
		for name := range s.users {
			users[name] = apiUser{Username: name, Attributes: map[string]*string{}}
		}
		return jsonReply(http.StatusOK, users)
	case "connectionGroups":
		if len(parts) != 3 || parts[2] != "tree" {
			return notFound()
		}
		if parts[1] != "ROOT" {
			return errObjectNotFound(parts[1])
		}
		if r.Method != http.MethodGet {
			return methodNotAllowed(http.MethodGet)
		}
		return jsonReply(http.StatusOK, s.rootTreeLocked())
	}
	return notFound()
}

// connectionsLocked handles connections, connections/{id} and
// connections/{id}/parameters. The caller must hold s.mu.
func (s *Server) connectionsLocked(r *http.Request, parts []string, body []byte) reply {
	if len(parts) == 0 {
		switch r.Method {
		case http.MethodGet:
			list := make(map[string]apiConnection, len(s.connections))
			for id, c := range s.connections {
				list[id] = c.api()
			}
			return jsonReply(http.StatusOK, list)
		case http.MethodPost:
			return s.createConnectionLocked(body)
		}
		return methodNotAllowed("GET, POST")
	}

	// Guacamole looks the object up before matching the rest of the path,
	// so an unknown identifier is a JSON 404 whatever follows it.
	c, ok := s.connections[parts[0]]
	if !ok {
		return errObjectNotFound(parts[0])
	}
	switch {
	case len(parts) == 1:
		if r.Method != http.MethodGet {
			return methodNotAllowed(http.MethodGet)
		}
		return jsonReply(http.StatusOK, c.api())
	case len(parts) == 2 && parts[1] == "parameters":
		if r.Method != http.MethodGet {
			return methodNotAllowed(http.MethodGet)
		}
		params := c.parameters
		if params == nil {
			params = map[string]*string{}
		}
		return jsonReply(http.StatusOK, params)
	}
	return notFound()
}

// createConnectionLocked stores the posted connection under a new
// identifier and, like Guacamole, answers with the posted object plus that
// identifier. The caller must hold s.mu.
func (s *Server) createConnectionLocked(body []byte) reply {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return errBadRequest("Data must be submitted when creating objects.")
	}
	var in apiConnection
	if err := json.Unmarshal(trimmed, &in); err != nil {
		return errBadRequest("Malformed JSON in request body.")
	}

	id := strconv.Itoa(s.nextConnID)
	s.nextConnID++
	in.Identifier = &id
	in.ActiveConnections = 0
	in.LastActive = nil

	c := &connection{
		identifier:       id,
		parentIdentifier: "ROOT",
		parameters:       in.Parameters,
		attributes:       in.Attributes,
	}
	if in.Name != nil {
		c.name = *in.Name
	}
	if in.ParentIdentifier != nil {
		c.parentIdentifier = *in.ParentIdentifier
	}
	if in.Protocol != nil {
		c.protocol = *in.Protocol
	}
	if c.attributes == nil {
		c.attributes = map[string]*string{}
	}
	s.connections[id] = c
	return jsonReply(http.StatusOK, in)
}

// rootTreeLocked returns the ROOT connection group with every connection
// as a child, ordered by identifier. The caller must hold s.mu.
func (s *Server) rootTreeLocked() apiConnectionGroup {
	ids := make([]string, 0, len(s.connections))
	for id := range s.connections {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		a, errA := strconv.Atoi(ids[i])
		b, errB := strconv.Atoi(ids[j])
		if errA == nil && errB == nil {
			return a < b
		}
		return ids[i] < ids[j]
	})

	root := apiConnectionGroup{
		Name:       "ROOT",
		Identifier: "ROOT",
		Type:       "ORGANIZATIONAL",
		Attributes: map[string]*string{},
	}
	for _, id := range ids {
		root.ChildConnections = append(root.ChildConnections, s.connections[id].api())
	}
	return root
}

// ConnectionList returns the JSON of a connection list shaped like
// Guacamole's answer to GET /api/session/data/{ds}/connections, with as many
// RDP connections as it takes to reach minBytes. Benchmarks use it as a
// realistic answer body.
func ConnectionList(minBytes int) []byte {
	lastActive := sampleLastActive
	conns := map[string]apiConnection{}
	for i := 1; ; i++ {
		id := strconv.Itoa(i)
		conns[id] = apiConnection{
			Name: strPtr("rdp-host-" + id), Identifier: strPtr(id),
			ParentIdentifier: strPtr("ROOT"), Protocol: strPtr("rdp"),
			Attributes: map[string]*string{"max-connections": nil, "weight": nil},
			LastActive: &lastActive,
		}
		data, _ := json.Marshal(conns)
		if len(data) >= minBytes {
			return data
		}
	}
}
