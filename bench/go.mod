module github.com/chatrt/chat/bench

go 1.26.0

replace github.com/chatrt/chat/services/edge => ../services/edge

replace (
	github.com/chatrt/chat/gen => ../gen
	github.com/chatrt/chat/platform => ../platform
)

require (
	github.com/HdrHistogram/hdrhistogram-go v1.4.0
	github.com/chatrt/chat/services/edge v0.0.0
	github.com/gorilla/websocket v1.5.3
	github.com/prometheus/common v0.72.0
	github.com/redis/go-redis/v9 v9.23.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/prometheus/client_model v0.6.3 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
