# The "Automatic differentiation with autograd" chapter of Dive into Deep Learning
# (MXNet edition), unchanged except for the two import lines below.
import pullback as mx
from pullback import nd, autograd

nd.random.seed(0)

# Attaching gradients
x = nd.array([[1, 2], [3, 4]])
x.attach_grad()
with autograd.record():
    y = x * 2
    z = y * x
z.backward()
print('x.grad: ', x.grad)

# Training mode and prediction mode
print(autograd.is_training())
with autograd.record():
    print(autograd.is_training())


# Computing the gradient of Python control flow
def f(a):
    b = a * 2
    while nd.norm(b).asscalar() < 1000:
        b = b * 2
    if nd.sum(b).asscalar() > 0:
        c = b
    else:
        c = 100 * b
    return c


a = nd.random_normal(shape=3)
a.attach_grad()
with autograd.record():
    c = f(a)
c.backward()
print(a.grad == c / a)

# pullback: the same f, differentiated by source transformation. This is the
# forward (with its stack pushes) and the adjoint that pb.compile generates.
print(mx.adjoint_source(f, argnums=0))

# Head gradients and the chain rule
with autograd.record():
    y = x * 2
    z = y * x

head_gradient = nd.array([[10, 1.], [.1, .01]])
z.backward(head_gradient)
print(x.grad)
