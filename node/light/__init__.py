"""The light client: what a node serves, checked against the validators' signatures before it is shown."""
