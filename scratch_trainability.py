"""Scratch: does the no-BN GoogLeNet train with SGD lr 0.1 (kuangliu recipe) on CIFAR-size data?"""
import sys, time, torch, torch.nn.functional as F
sys.path.insert(0, "src")
from classicnets.models import create_model, ClassifierOutput
dev = "cuda"
torch.manual_seed(0)
# learnable synthetic task: 10 fixed random 32x32 prototypes + heavy noise
protos = torch.randn(10, 3, 32, 32, device=dev)
def batch(n=128):
    y = torch.randint(0, 10, (n,), device=dev)
    x = protos[y] * 0.5 + torch.randn(n, 3, 32, 32, device=dev)
    return x, y
for lr in (0.1, 0.01):
  for aux in (False, True):
    torch.manual_seed(0)
    m = create_model("googlenet", num_classes=10, input_size=32, aux_logits=aux).to(dev).train()
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    t = time.time(); hist = []
    for step in range(600):
        x, y = batch()
        out = m(x)
        if isinstance(out, ClassifierOutput):
            loss = F.cross_entropy(out.logits, y) + 0.3 * sum(F.cross_entropy(a, y) for a in out.aux_logits)
        else:
            loss = F.cross_entropy(out, y)
        opt.zero_grad(); loss.backward(); opt.step()
        if step % 100 == 99: hist.append(round(loss.item(), 3))
    m.eval()
    with torch.no_grad():
        x, y = batch(1000); acc = (m(x).argmax(1) == y).float().mean().item()
    print(f"lr={lr} aux={aux}: loss every 100 steps {hist}, acc {acc:.3f}, {time.time()-t:.0f}s", flush=True)
