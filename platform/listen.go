package platform

import (
	"fmt"
	"net"
)

// Listen opens the gRPC listener and, when MetricsAddr is set, the metrics listener.
func (c Config) Listen() (grpcLis, metricsLis net.Listener, err error) {
	grpcLis, err = net.Listen("tcp", c.GRPCAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen grpc on %s: %w", c.GRPCAddr, err)
	}
	if c.MetricsAddr == "" {
		return grpcLis, nil, nil
	}
	metricsLis, err = net.Listen("tcp", c.MetricsAddr)
	if err != nil {
		grpcLis.Close()
		return nil, nil, fmt.Errorf("listen metrics on %s: %w", c.MetricsAddr, err)
	}
	return grpcLis, metricsLis, nil
}
