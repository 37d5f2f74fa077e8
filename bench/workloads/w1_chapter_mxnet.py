"""W1 (the chapter's ``f``) in MXNet 1.9.1, for ``bench/mxnet_worker.py``; numpy + mxnet only."""


def mxnet_loss():
    from mxnet import nd

    def loss_mxnet(a):
        b = a * 2
        while nd.norm(b).asscalar() < 1000:
            b = b * 2
        if nd.sum(b).asscalar() > 0:
            c = b
        else:
            c = 100 * b
        return nd.sum(c)

    return loss_mxnet
