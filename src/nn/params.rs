//! Parameters: named tensors that outlive the tape.
//!
//! A model's parameters live in one flat, ordered [`ParamStore`] — the same list of
//! `(name, tensor)` pairs as a PyTorch `state_dict`, under timm's names — and modules hold only
//! [`ParamId`]s into it. That one mechanism serves every consumer: a step binds every parameter
//! to the tape ([`ParamStore::bind`]), the optimizer walks the list with the gradients in the same
//! order, and a checkpoint is the list written out by name.
//!
//! Because modules store ids, not tensors, the same module tree runs in f32 (training) and in
//! f64 (gradient checks): only the store's element type changes ([`ParamStore::cast`]).

use autograd::{Device, DeviceError, Float, Graph, Tensor, Var};

/// A handle to one parameter of a [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(usize);

impl ParamId {
    /// The parameter's position in its store (creation order, the order of gradients).
    pub fn index(self) -> usize {
        self.0
    }
}

/// One named parameter.
#[derive(Clone, Debug)]
pub struct Param<T: Float> {
    /// timm's name, e.g. `blocks.0.attn.qkv.weight`.
    pub name: String,
    /// The current value, updated in place by the optimizer.
    pub value: Tensor<T>,
    /// Whether AdamW's decoupled weight decay applies. Off for biases, norms, `pos_embed` and
    /// `cls_token`, as in timm and the paper's code: decaying them only fights the data.
    pub weight_decay: bool,
    /// Kept fixed (a fine-tune's frozen backbone, PyTorch's `requires_grad=False`): bound to the
    /// tape as a constant, so no gradient reaches it and its gradient is zero (see
    /// [`ParamStore::freeze`]).
    pub frozen: bool,
}

/// The model's parameters, in creation order.
#[derive(Clone, Debug)]
pub struct ParamStore<T: Float = f32> {
    params: Vec<Param<T>>,
}

impl<T: Float> Default for ParamStore<T> {
    fn default() -> Self {
        ParamStore { params: Vec::new() }
    }
}

impl<T: Float> ParamStore<T> {
    /// An empty store; modules' constructors fill it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter; panics on a duplicate name (a bug in a module's constructor).
    pub fn add(&mut self, name: impl Into<String>, value: Tensor<T>, weight_decay: bool) -> ParamId {
        let name = name.into();
        assert!(self.id(&name).is_none(), "ParamStore: duplicate parameter name {name}");
        self.params.push(Param { name, value, weight_decay, frozen: false });
        ParamId(self.params.len() - 1)
    }

    /// The parameter `id` refers to.
    pub fn get(&self, id: ParamId) -> &Param<T> {
        &self.params[id.0]
    }

    /// The parameter `id` refers to, to change (e.g. a custom initialisation or a loaded value).
    pub fn get_mut(&mut self, id: ParamId) -> &mut Param<T> {
        &mut self.params[id.0]
    }

    /// The id of the parameter called `name`.
    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name).map(ParamId)
    }

    /// Every parameter, in creation order.
    pub fn iter(&self) -> impl Iterator<Item = &Param<T>> {
        self.params.iter()
    }

    /// Every parameter, in creation order, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Param<T>> {
        self.params.iter_mut()
    }

    /// The number of parameter tensors (not of scalars: see [`ParamStore::num_elements`]).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether no parameter was registered.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Total number of scalar parameters.
    pub fn num_elements(&self) -> usize {
        self.params.iter().map(|p| p.value.numel()).sum()
    }

    /// Puts every parameter on the tape as a leaf that wants a gradient (sharing storage: no
    /// copy), a frozen one as a constant leaf (backward stops there: no gradient, and none
    /// through the layers below that hold nothing trainable). The returned handles are valid for
    /// this tape only.
    pub fn bind(&self, g: &mut Graph<T>) -> ParamVars {
        let vars = self.params.iter().map(|p| if p.frozen { g.input(p.value.clone()) } else { g.param(&p.value) });
        ParamVars { vars: vars.collect() }
    }

    /// Freezes every parameter whose name `which` picks: from now on it is bound as a constant
    /// ([`ParamStore::bind`]: its gradient is zero) and never decayed, so neither SGD nor AdamW
    /// moves it (their update of a parameter with a zero gradient, zero state and no decay is
    /// zero). Returns how many were frozen.
    pub fn freeze(&mut self, which: impl Fn(&str) -> bool) -> usize {
        let mut n = 0;
        for p in self.params.iter_mut().filter(|p| which(&p.name)) {
            (p.frozen, p.weight_decay) = (true, false);
            n += 1;
        }
        n
    }

    /// Where the parameters live: the device of the first (a store is moved as a whole by
    /// [`ParamStore::to`]); the CPU for an empty store.
    pub fn device(&self) -> Device {
        self.params.first().map_or(Device::Cpu, |p| p.value.device())
    }

    /// The same parameters on `device` (a copy per tensor; none if they are there already).
    /// A step then binds them there, and every op, gradient and update runs on that device.
    pub fn to(&self, device: Device) -> Result<ParamStore<T>, DeviceError> {
        let params = self
            .params
            .iter()
            .map(|p| Ok(Param { value: p.value.to(device)?, ..p.clone() }))
            .collect::<Result<_, DeviceError>>()?;
        Ok(ParamStore { params })
    }

    /// The same parameters in another element type.
    pub fn cast<U: Float>(&self) -> ParamStore<U> {
        ParamStore {
            params: self
                .params
                .iter()
                .map(|p| Param {
                    name: p.name.clone(),
                    value: p.value.cast(),
                    weight_decay: p.weight_decay,
                    frozen: p.frozen,
                })
                .collect(),
        }
    }
}

/// The parameters of a store, bound to one tape.
#[derive(Clone, Debug)]
pub struct ParamVars {
    vars: Vec<Var>,
}

impl ParamVars {
    /// Handles for a store's parameters in store order (as [`ParamStore::bind`] makes them);
    /// useful when the tape's leaves were created elsewhere, e.g. inside `gradcheck`.
    pub fn from_vars(vars: Vec<Var>) -> Self {
        ParamVars { vars }
    }

    /// The tape handle of parameter `id`.
    pub fn get(&self, id: ParamId) -> Var {
        self.vars[id.0]
    }

    /// Every parameter's tape handle, in store order (the inputs of a gradcheck).
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Moves the gradients out of the tape after backward, in store order. A parameter that did
    /// not influence the loss gets a zero gradient (on the parameter's device).
    pub fn take_grads<T: Float>(&self, g: &mut Graph<T>) -> Vec<Tensor<T>> {
        let zeros = |g: &Graph<T>, v: Var| Tensor::full_on(g.shape(v), T::ZERO, g.value(v).device());
        self.vars.iter().map(|&v| g.take_grad(v).unwrap_or_else(|| zeros(g, v))).collect()
    }
}
