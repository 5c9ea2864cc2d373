"""CPython code every role shares: durable writes, the upload client, config
loading, text and logging. Below the roles (gateway, handheld, simulator,
CLI) and above only the wire protocol; device firmware never imports it."""
