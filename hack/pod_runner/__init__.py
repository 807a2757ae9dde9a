"""The local stack's pod runner: plays the kubelet's part for diffleet's pods on kwok nodes.

kwok nodes run nothing. The runner watches pods labelled app.kubernetes.io/part-of=diffleet
that are bound to kwok nodes, runs each pod's first container as a local process (or, for a
simulated worker, as a task in its own process), gives it a kubeconfig with a token of the
pod's ServiceAccount and an IP of its own (127.0.x.y), and writes the pod's status. kwok's
pod stages skip these pods. It also forwards the node ports of diffleet's NodePort Services
to their ready pods, as kube-proxy would.
"""
