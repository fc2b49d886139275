// Command edge runs the WebSocket edge. Run it with -h for its flags.
package main

import (
	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/services/edge/edgeserver"
)

func main() { platform.Main("edge", edgeserver.ConfigFromArgs, edgeserver.Run) }
