"""DNS for a mail flow: the injected resolver, the embedded server, SPF planning and linting."""
