"""One Textual screen per wizard step."""
