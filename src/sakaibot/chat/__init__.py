"""Front ends: the chat port every one implements, the console and (later) Telegram."""
