"""Platform-free domain rules: states and their allowed transitions."""
