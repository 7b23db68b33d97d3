"""The agent's memory budget (`limits.memory`): settings, the accounting, and the receiver-side gate."""
