package plugin

import (
	"context"
	"errors"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dso-project/dso/internal/provider"
	pb "github.com/dso-project/dso/internal/provider/plugin/proto"
)

// Handshake is what dso and a plugin check before talking: a plugin built
// for another protocol version, or a program that is not a dso plugin,
// refuses to start.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "DSO_PROVIDER_PLUGIN",
	MagicCookieValue: "9d3c5e0b4a1f",
}

// pluginName is the name under which the provider service is dispensed.
const pluginName = "provider"

// Backend is what a plugin implements; Serve exposes it over gRPC. Errors
// wrapping provider.ErrNotFound, ErrDenied, ErrUnreachable or ErrThrottled
// reach dso classified.
type Backend interface {
	Configure(name string, options map[string]string) error
	Get(ctx context.Context, path string) (provider.Secret, error)
	Version(ctx context.Context, path string) (string, error)
}

// Serve runs a plugin serving b until dso kills it. It is the whole main of
// a plugin written in Go.
func Serve(b Backend) {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         goplugin.PluginSet{pluginName: &grpcPlugin{backend: b}},
		GRPCServer:      goplugin.DefaultGRPCServer,
	})
}

// grpcPlugin binds Backend to go-plugin on both sides.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	backend Backend
}

func (p *grpcPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterProviderServer(s, &server{b: p.backend})
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return pb.NewProviderClient(c), nil
}

// server adapts a Backend to the generated service.
type server struct {
	pb.UnimplementedProviderServer
	b Backend
}

func (s *server) Configure(_ context.Context, r *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	if err := s.b.Configure(r.GetName(), r.GetOptions()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &pb.ConfigureResponse{}, nil
}

func (s *server) Get(ctx context.Context, r *pb.GetRequest) (*pb.GetResponse, error) {
	sec, err := s.b.Get(ctx, r.GetPath())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetResponse{Value: sec.Value, Version: sec.Version}, nil
}

func (s *server) Version(ctx context.Context, r *pb.VersionRequest) (*pb.VersionResponse, error) {
	v, err := s.b.Version(ctx, r.GetPath())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.VersionResponse{Version: v}, nil
}

// toStatus carries an error's class as a gRPC code.
func toStatus(err error) error {
	code := codes.Unknown
	switch {
	case errors.Is(err, provider.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, provider.ErrDenied):
		code = codes.PermissionDenied
	case errors.Is(err, provider.ErrThrottled):
		code = codes.ResourceExhausted
	case errors.Is(err, provider.ErrUnreachable):
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

// fromStatus classifies a gRPC error from a plugin.
func fromStatus(err error) (kind error, detail error) {
	st, ok := status.FromError(err)
	if !ok {
		return nil, err
	}
	switch st.Code() {
	case codes.NotFound:
		kind = provider.ErrNotFound
	case codes.PermissionDenied, codes.Unauthenticated:
		kind = provider.ErrDenied
	case codes.ResourceExhausted:
		kind = provider.ErrThrottled
	case codes.Unavailable, codes.DeadlineExceeded:
		kind = provider.ErrUnreachable
	}
	return kind, errors.New(st.Message())
}
