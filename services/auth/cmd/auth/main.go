// Command auth runs the auth service. Run it with -h for its flags.
package main

import (
	"github.com/chatrt/chat/platform"
	"github.com/chatrt/chat/services/auth/authserver"
)

func main() { platform.Main("auth", authserver.ConfigFromArgs, authserver.Run) }
