module github.com/chatrt/chat/suite

go 1.26.0

replace (
	github.com/chatrt/chat/gen => ../gen
	github.com/chatrt/chat/platform => ../platform
	github.com/chatrt/chat/services/auth => ../services/auth
	github.com/chatrt/chat/services/edge => ../services/edge
	github.com/chatrt/chat/services/presence => ../services/presence
	github.com/chatrt/chat/services/room => ../services/room
)

require (
	github.com/alicebob/miniredis/v2 v2.40.0
	github.com/chatrt/chat/gen v0.0.0
	github.com/chatrt/chat/platform v0.0.0
	github.com/chatrt/chat/services/auth v0.0.0
	github.com/chatrt/chat/services/edge v0.0.0
	github.com/chatrt/chat/services/presence v0.0.0
	github.com/chatrt/chat/services/room v0.0.0
	github.com/gorilla/websocket v1.5.3
	github.com/redis/go-redis/v9 v9.23.0
	go.uber.org/goleak v1.3.0
	golang.org/x/sync v0.25.0
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/alexedwards/argon2id v1.0.0 // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus v1.1.1 // indirect
	github.com/grpc-ecosystem/go-grpc-middleware/v2 v2.3.4 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/peterbourgon/ff/v3 v3.4.0 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	github.com/prometheus/common v0.72.0 // indirect
	github.com/prometheus/procfs v0.22.0 // indirect
	github.com/yuin/gopher-lua v1.1.1 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/crypto v0.57.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	golang.org/x/time v0.16.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
)
