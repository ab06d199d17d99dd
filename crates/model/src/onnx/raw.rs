//! One model call over buffers the predictor owns, through ONNX Runtime's C
//! API: every input and output is a tensor *over our memory* (no copy in,
//! no allocation out), and a KV buffer can be bound as an input and an
//! output at once, which is how `GroupQueryAttention` updates a cache in
//! place (it compares the two data pointers).
//!
//! The `ort` crate's safe API cannot express that last case: its views are
//! cloned when bound as inputs, and borrowed tensors cannot be outputs. So
//! this module is the one place in the workspace with `unsafe`; every block
//! says why it is sound.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_void};
use std::ptr;

use ort::AsPointer;
use ort::session::Session;
use ort::sys::{
    ONNXTensorElementDataType, OrtAllocatorType, OrtMemType, OrtMemoryInfo, OrtStatusPtr, OrtValue,
};

/// A read-only input tensor.
#[derive(Debug, Clone, Copy)]
pub(crate) enum In<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
    I32(&'a [i32]),
}

impl In<'_> {
    fn parts(&self) -> (*mut c_void, usize, usize, ONNXTensorElementDataType) {
        use ONNXTensorElementDataType as T;
        match *self {
            In::F32(s) => (
                s.as_ptr().cast_mut().cast(),
                s.len(),
                4,
                T::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
            ),
            In::I64(s) => (
                s.as_ptr().cast_mut().cast(),
                s.len(),
                8,
                T::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64,
            ),
            In::I32(s) => (
                s.as_ptr().cast_mut().cast(),
                s.len(),
                4,
                T::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
            ),
        }
    }
}

/// The CPU memory description every tensor here uses.
#[derive(Debug)]
pub(crate) struct Cpu(*mut OrtMemoryInfo);

// SAFETY: an OrtMemoryInfo is an immutable description; ONNX Runtime reads it
// from any thread.
unsafe impl Send for Cpu {}

impl Cpu {
    pub(crate) fn new() -> Result<Cpu, String> {
        let mut info = ptr::null_mut();
        // SAFETY: a plain constructor call; `info` receives an owned object
        // that Drop releases.
        check(unsafe {
            (ort::api().CreateCpuMemoryInfo)(
                OrtAllocatorType::OrtArenaAllocator,
                OrtMemType::OrtMemTypeDefault,
                &mut info,
            )
        })?;
        Ok(Cpu(info))
    }
}

impl Drop for Cpu {
    fn drop(&mut self) {
        // SAFETY: created by CreateCpuMemoryInfo, released once.
        unsafe { (ort::api().ReleaseMemoryInfo)(self.0) }
    }
}

/// Turns a status into a result, releasing it.
fn check(status: OrtStatusPtr) -> Result<(), String> {
    if status.0.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null status is a live OrtStatus that we own; its message
    // is a C string valid until the status is released, and we copy it first.
    unsafe {
        let msg = CStr::from_ptr((ort::api().GetErrorMessage)(status.0))
            .to_string_lossy()
            .into_owned();
        (ort::api().ReleaseStatus)(status.0);
        Err(msg)
    }
}

/// OrtValues made for one call, released when it ends.
struct Values(Vec<*mut OrtValue>);

impl Drop for Values {
    fn drop(&mut self) {
        for &v in &self.0 {
            // SAFETY: each was created by CreateTensorWithDataAsOrtValue and
            // is released once; it does not own the memory it points at.
            unsafe { (ort::api().ReleaseValue)(v) }
        }
    }
}

impl Values {
    /// A tensor over `len` elements of `size` bytes at `data`, shaped `shape`.
    fn add(
        &mut self,
        cpu: &Cpu,
        data: *mut c_void,
        len: usize,
        size: usize,
        ty: ONNXTensorElementDataType,
        shape: &[i64],
    ) -> Result<*mut OrtValue, String> {
        let want: i64 = shape.iter().product();
        if usize::try_from(want).ok() != Some(len) {
            return Err(format!(
                "a buffer of {len} elements cannot have shape {shape:?}"
            ));
        }
        let mut v = ptr::null_mut();
        // SAFETY: `data` points at `len * size` initialised bytes that the
        // caller keeps borrowed for the whole call (see `run`); ONNX Runtime
        // does not take ownership and the value is released before the
        // borrow ends.
        check(unsafe {
            (ort::api().CreateTensorWithDataAsOrtValue)(
                cpu.0,
                data,
                len * size,
                shape.as_ptr(),
                shape.len(),
                ty,
                &mut v,
            )
        })?;
        self.0.push(v);
        Ok(v)
    }
}

/// A buffer bound both as an input and as an output of the call: ONNX
/// Runtime reads and writes it in place.
#[derive(Debug)]
pub(crate) struct InOut<'a> {
    pub input: &'a CStr,
    pub output: &'a CStr,
    pub shape: &'a [i64],
    pub data: &'a mut [f32],
}

/// An output written into our buffer.
#[derive(Debug)]
pub(crate) struct Out<'a> {
    pub name: &'a CStr,
    pub shape: &'a [i64],
    pub data: &'a mut [f32],
}

/// Runs `session` once. Each output must have exactly the shape the graph
/// produces (ONNX Runtime fails the call otherwise, and nothing is written
/// past a buffer's end).
pub(crate) fn run(
    session: &mut Session,
    cpu: &Cpu,
    inputs: &[(&CStr, &[i64], In<'_>)],
    inouts: &mut [InOut<'_>],
    outputs: &mut [Out<'_>],
) -> Result<(), String> {
    use ONNXTensorElementDataType as T;
    let float = T::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    let mut values = Values(Vec::with_capacity(
        inputs.len() + 2 * inouts.len() + outputs.len(),
    ));
    let mut in_names = Vec::new();
    let mut in_values: Vec<*const OrtValue> = Vec::new();
    let mut out_names = Vec::new();
    let mut out_values: Vec<*mut OrtValue> = Vec::new();
    for (name, shape, data) in inputs {
        let (p, len, size, ty) = data.parts();
        in_names.push(name.as_ptr());
        in_values.push(values.add(cpu, p, len, size, ty, shape)?);
    }
    for io in inouts.iter_mut() {
        let p: *mut c_void = io.data.as_mut_ptr().cast();
        let len = io.data.len();
        in_names.push(io.input.as_ptr());
        in_values.push(values.add(cpu, p, len, 4, float, io.shape)?);
        out_names.push(io.output.as_ptr());
        out_values.push(values.add(cpu, p, len, 4, float, io.shape)?);
    }
    for o in outputs.iter_mut() {
        let p: *mut c_void = o.data.as_mut_ptr().cast();
        out_names.push(o.name.as_ptr());
        out_values.push(values.add(cpu, p, o.data.len(), 4, float, o.shape)?);
    }
    let session_ptr = session.ptr_mut();
    // SAFETY: names are NUL-terminated strings borrowed for the call; every
    // value points at memory borrowed (shared for inputs, exclusive for
    // in-place buffers and outputs) until this function returns; outputs are
    // preallocated, so ONNX Runtime writes into them and replaces none. The
    // one aliasing case, an in-place buffer seen as both an input and an
    // output, is the share-buffer mode of GroupQueryAttention, which reads
    // each past position before it writes the new one. `&mut Session` keeps
    // the call exclusive.
    check(unsafe {
        (ort::api().Run)(
            session_ptr,
            ptr::null(),
            in_names.as_ptr(),
            in_values.as_ptr(),
            in_names.len(),
            out_names.as_ptr(),
            out_names.len(),
            out_values.as_mut_ptr(),
        )
    })
}

/// `name` as a C string (graph names never hold a NUL; one that does cannot
/// be bound and is reported).
pub(crate) fn cname(name: &str) -> Result<CString, String> {
    CString::new(name).map_err(|_| format!("tensor name {name:?} holds a NUL byte"))
}
