// Package proto is the gRPC protocol between dso and external provider
// plugins, generated from provider.proto by protoc with protoc-gen-go
// v1.36.12 and protoc-gen-go-grpc v1.6.0 (Debian's protobuf-compiler).
// Plugins in other languages generate their stubs from the same file.
package proto

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative provider.proto
