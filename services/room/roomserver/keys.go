package roomserver

import roomv1 "github.com/chatrt/chat/gen/chat/room/v1"

// keys builds the room service's Redis keys and channels. Every key of a room carries the
// room's hash tag (roomv1.RoomTag: its encoded name), so every script of a room runs in one
// Redis Cluster slot, and no room name, however odd, reaches a key unencoded.
type keys struct{ prefix string }

// roomKeys are the keys and the channel of one room.
type roomKeys struct {
	// conns maps each connection in the room to its user id.
	conns string
	// counts maps each member to its number of connections in the room.
	counts string
	// users is the sorted set of members as "<user id> <username>", all scores 0: ordered by
	// id, since ids hold no space and a space sorts before every character an id may hold.
	// One ZRANGE lists members with their names (no lookup per member).
	users string
	// membersVersion identifies the first members (see bump_members_version in lib.lua).
	membersVersion string
	// meta holds seq (the last message's) and epoch.
	meta string
	// history is the capped stream of messages, with entry ids "<seq>-0".
	history string
	// channel is the pub/sub channel of the room's events.
	channel string
	// tag is the key prefix up to and including the hash tag, for per-message keys.
	tag string
}

func (k keys) room(name string) roomKeys {
	tag := k.prefix + "room:" + roomv1.RoomTag(name)
	return roomKeys{
		conns:          tag + ":conns",
		counts:         tag + ":counts",
		users:          tag + ":users",
		meta:           tag + ":meta",
		membersVersion: tag + ":mver",
		history:        tag + ":history",
		channel:        roomv1.EventChannel(k.prefix, name),
		tag:            tag,
	}
}

// dedup is the key remembering a client_msg_id of a user in the room for the dedup window.
// What follows the hash tag may hold any character: only the first {...} is the tag.
func (r roomKeys) dedup(userID, clientMsgID string) string {
	return r.tag + ":dedup:" + userID + ":" + clientMsgID
}

// connRooms is the set of names of the rooms a connection is in (or was about to join): an
// index for LeaveAll, kept a superset of the truth (added before a join, removed after a leave).
func (k keys) connRooms(connID string) string { return k.prefix + "conn:{" + connID + "}:rooms" }
