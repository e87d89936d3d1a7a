#!/usr/bin/env bash
# The cluster's certificates and keys, made with openssl. Files that exist are kept, so a
# second run changes nothing; delete PKI_DIR to start over.
#
#   pki.sh PKI_DIR NODE_NAME API_ADDR API_SERVICE_IP
#
# API_ADDR is the apiserver's advertise address (the pod bridge's gateway), API_SERVICE_IP
# the first address of the service range (the `kubernetes` Service). Output in PKI_DIR:
#   ca.{crt,key}                   the cluster CA (signs everything below, and the kubelet's
#                                  client CSRs through the controller-manager)
#   apiserver.{crt,key}            apiserver serving: 127.0.0.1, API_ADDR, API_SERVICE_IP,
#                                  kubernetes, kubernetes.default{,.svc,.svc.cluster.local}
#   apiserver-kubelet-client.*     apiserver -> kubelet (O=system:masters)
#   admin.*                        kubectl (CN=kubernetes-admin, O=system:masters)
#   controller-manager.*           CN=system:kube-controller-manager
#   scheduler.*                    CN=system:kube-scheduler
#   kube-proxy.*                   CN=system:kube-proxy
#   kubelet-client.*               CN=system:node:NODE_NAME, O=system:nodes
#   kubelet-server.*               kubelet serving: NODE_NAME, 127.0.0.1, API_ADDR
#   front-proxy-ca.{crt,key}       the aggregation layer's CA (requestheader client CA)
#   front-proxy-client.*           apiserver -> extension apiservers, signed by front-proxy-ca
#   sa.{key,pub}                   service-account token signing key pair
set -euo pipefail

if [[ $# -ne 4 ]]; then
    echo "usage: $0 PKI_DIR NODE_NAME API_ADDR API_SERVICE_IP" >&2
    exit 2
fi
DIR=$1 NODE=$2 API_ADDR=$3 API_SVC=$4
DAYS=3650
mkdir -p "$DIR"
chmod 0700 "$DIR"
cd "$DIR"

# Certificates naming the node or the addresses are made again when those change.
PARAMS="$NODE $API_ADDR $API_SVC"
if [[ -f params && "$(cat params)" != "$PARAMS" ]]; then
    rm -f apiserver.crt apiserver.key kubelet-client.crt kubelet-client.key kubelet-server.crt kubelet-server.key
    echo "pki: node name or addresses changed ($(cat params) -> $PARAMS): new apiserver and kubelet certificates"
fi
echo "$PARAMS" >params

# ca NAME CN: a self-signed CA, NAME.crt and NAME.key.
ca() {
    local name=$1 cn=$2
    [[ -f $name.crt && -f $name.key ]] && return 0
    openssl genrsa -out "$name.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$name.key" -sha256 -days "$DAYS" -subj "/CN=$cn" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "$name.crt"
    echo "pki: made the CA $DIR/$name.crt"
}
ca ca berth-cluster-ca
# The aggregation layer's own CA: the apiserver authenticates to extension apiservers with a
# front-proxy-client certificate, which they check against this CA (requestheader).
ca front-proxy-ca berth-front-proxy-ca

# cert NAME SUBJECT USAGE [SAN] [CA]: NAME.key and NAME.crt signed by CA (default: the cluster CA).
cert() {
    local name=$1 subject=$2 usage=$3 san=${4:-} signer=${5:-ca}
    [[ -f $name.crt && -f $name.key ]] && return 0
    openssl genrsa -out "$name.key" 2048 2>/dev/null
    openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        if [[ -n $san ]]; then echo "subjectAltName=$san"; fi
    } >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA "$signer.crt" -CAkey "$signer.key" -CAcreateserial -sha256 \
        -days "$DAYS" -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
    echo "pki: made $name.crt ($subject)"
}

cert apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:$API_ADDR,IP:$API_SVC,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert admin "/O=system:masters/CN=kubernetes-admin" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kube-proxy "/CN=system:kube-proxy" clientAuth
cert kubelet-client "/O=system:nodes/CN=system:node:$NODE" clientAuth
cert kubelet-server "/CN=$NODE" serverAuth "DNS:$NODE,IP:127.0.0.1,IP:$API_ADDR"
cert front-proxy-client "/CN=front-proxy-client" clientAuth "" front-proxy-ca

if [[ ! -f sa.key || ! -f sa.pub ]]; then
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    echo "pki: made the service-account key pair sa.key/sa.pub"
fi
chmod 0600 ./*.key
