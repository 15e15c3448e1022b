"""The HTTP edge: routes → structs → pipeline → response.  No policy logic lives here."""
