"""The stages a message passes after DATA on the host: enhanced filtering, mail flow rules."""
