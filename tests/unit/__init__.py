"""Fast unit tests of pure logic: no cluster, no broker, no network."""
