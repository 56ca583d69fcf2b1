"""Every pinned version of the test environment, in one place.

Cache entries are keyed by these: bump one and the next run rebuilds that peer.
"""

KUBERNETES = "v1.36.3"  # kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
ETCD = "v3.6.16"
KWOK = "v0.8.0"
HELM = "v3.19.5"
GATEWAY_API = "v1.6.3"
KAFKA = "4.1.2"  # org.apache.kafka:kafka_2.13, KRaft single node
LOG4J = "2.25.3"
SLF4J = "2.0.17"
# Debian packages: the version is whatever apt installs; recorded at start-up.
DEBIAN_PACKAGES = ("prometheus", "prometheus-alertmanager", "postgresql")
