"""Where jobs run: connecting to Ray, local or a cluster (`connect`), the cluster token
(`auth`), `mlrt submit` as a Ray job (`submit`) with its checks before upload (`preflight`),
and KubeRay manifests (`kuberay`)."""
