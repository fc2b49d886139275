package roomv1

import "encoding/base64"

// RoomTag is the Redis hash tag of a room: the base64url (unpadded) of its name, in braces. A
// room name is any printable Unicode, so it never reaches a key or channel unencoded: the
// encoding has no braces, colons or glob characters, and one name has one encoding. Every key
// of a room carries this tag, so each room lives in one Redis Cluster slot.
func RoomTag(room string) string {
	return "{" + base64.RawURLEncoding.EncodeToString([]byte(room)) + "}"
}

// EventChannel is the Redis pub/sub channel on which a room service with Redis key prefix
// keyPrefix publishes the RoomEvents of room: "<keyPrefix>room:<RoomTag(room)>:events".
func EventChannel(keyPrefix, room string) string {
	return keyPrefix + "room:" + RoomTag(room) + ":events"
}
