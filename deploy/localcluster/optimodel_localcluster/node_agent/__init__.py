"""The node agent: plays the kubelet for the local cluster's simulated nodes (see docs/node-agent.md)."""
