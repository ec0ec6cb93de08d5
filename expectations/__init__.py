"""Great Expectations suites, stored as versioned JSON next to this file."""
