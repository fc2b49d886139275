// Command presence runs the presence service. Run it with -h for its flags.
package main

import (
	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/services/presence/presenceserver"
)

func main() { platform.Main("presence", presenceserver.ConfigFromArgs, presenceserver.Run) }
