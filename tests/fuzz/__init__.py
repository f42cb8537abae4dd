"""The fuzz tier (`make fuzz`): hostile requests against a real export, each in a child process
under a memory cap and a timeout. See docs/testing.md."""
