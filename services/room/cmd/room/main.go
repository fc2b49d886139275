// Command room runs the room service. Run it with -h for its flags.
package main

import (
	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/services/room/roomserver"
)

func main() { platform.Main("room", roomserver.ConfigFromArgs, roomserver.Run) }
