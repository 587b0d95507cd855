"""The store: key names, the one Lua script loader, Redis reply decoding, the embedded
Valkey, the site registry and the audit trail. Everything above reaches Redis through here."""
