// Package platform is the shared server platform of every chat service: configuration from flags
// with environment-variable fallbacks, the Redis client constructor, and a gRPC server with
// logging, panic recovery, request validation, Prometheus metrics, health, reflection, keepalive,
// message-size limits and graceful shutdown.
package platform
