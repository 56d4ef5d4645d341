"""Platform adapters: translation between chat platforms and the core's event model."""
