//! Tensors in GPU buffers: a buffer, a shape, an element type and a label. Upload, zero-fill and readback.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::gpu::context::Counters;
use crate::gpu::Context;
use crate::weights::quant::QuantFormat;
use crate::{Error, Result};

/// Every storage buffer, and every binding of one, is a whole number of 16-byte quads, and every view starts on
/// one, so that a kernel may read any binding as `array<vec4<...>>`: the decode matvecs read weight rows 16 bytes
/// a load (prelude.wgsl, `MATVEC_READS`).
pub const BINDING_ALIGN: u64 = 16;

/// How elements are stored in a buffer. Half-precision elements are packed two per u32 word (element 2i in the
/// low half), which is how WGSL reads them without the f16 extension. Quantized matrices are packed rows of codes
/// and scales, one 16-byte aligned record per row (see [`crate::weights::quant`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    U32,
    /// A quantized weight matrix [..., rows, cols]: the last dimension is K.
    Quant(QuantFormat),
}

impl DType {
    /// Bytes that `shape` occupies in this type (quantized: whole packed rows of the last dimension).
    pub fn storage_bytes(self, shape: &[usize]) -> usize {
        let elements: usize = shape.iter().product();
        match self {
            DType::F32 | DType::U32 => 4 * elements,
            DType::F16 | DType::BF16 => 2 * elements,
            DType::Quant(format) => match shape.split_last() {
                Some((&cols, rows)) if cols > 0 => rows.iter().product::<usize>() * format.row_words(cols) * 4,
                _ => 0,
            },
        }
    }

    /// Bytes of one row of `cols` elements.
    pub fn row_bytes(self, cols: usize) -> usize {
        self.storage_bytes(&[1, cols])
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Quant(_))
    }

    /// The value of the `W_DTYPE` override constant that makes a kernel read this type (see prelude.wgsl).
    pub fn shader_code(self) -> f64 {
        match self {
            DType::F32 | DType::U32 => 0.0,
            DType::F16 => 1.0,
            DType::BF16 => 2.0,
            DType::Quant(format) => format.shader_code(),
        }
    }
}

/// A buffer that keeps the context's count of allocated bytes up to date.
#[derive(Debug)]
struct Allocation {
    buffer: wgpu::Buffer,
    memory: Arc<MemoryCounter>,
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.memory.free(self.buffer.size());
    }
}

/// Bytes of storage buffers alive now, and the most ever alive at once.
#[derive(Debug, Default)]
pub struct MemoryCounter {
    live: AtomicU64,
    peak: AtomicU64,
}

impl MemoryCounter {
    fn allocate(&self, bytes: u64) {
        let live = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(live, Ordering::Relaxed);
    }

    fn free(&self, bytes: u64) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// A tensor living in one GPU buffer, or in a byte range of one (a [`Context::view`]). Cloning shares the buffer.
#[derive(Clone, Debug)]
pub struct Tensor {
    buffer: Arc<Allocation>,
    /// Where the tensor starts in the buffer, in bytes: 0 except for views.
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
    label: Arc<str>,
}

impl Tensor {
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer.buffer
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Where the tensor starts in its buffer, in bytes (0 unless it is a view).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// What a kernel binds: the whole buffer, or a view's byte range of it.
    pub(crate) fn binding(&self) -> wgpu::BindingResource<'_> {
        if self.offset == 0 {
            return self.buffer().as_entire_binding();
        }
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer(),
            offset: self.offset,
            size: wgpu::BufferSize::new(self.size_bytes().max(BINDING_ALIGN).next_multiple_of(BINDING_ALIGN)),
        })
    }

    /// Bytes a write or a read may touch from the tensor's start: the rest of the buffer for a whole tensor
    /// (padded to a word), the view's own bytes for a view.
    fn extent(&self) -> u64 {
        if self.offset == 0 {
            self.buffer().size()
        } else {
            self.size_bytes().next_multiple_of(4)
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of data (the buffer itself is padded up to a whole u32 word).
    pub fn size_bytes(&self) -> u64 {
        self.dtype.storage_bytes(&self.shape) as u64
    }

    /// The same buffer seen with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let same_rows = !self.dtype.is_quantized() || shape.last() == self.shape.last();
        if shape.iter().product::<usize>() != self.len() || !same_rows {
            return Err(Error::shape("reshape", format!("{} {:?} cannot become {shape:?}", self.label, self.shape)));
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }

    /// The first `rows` rows of a tensor [R, ...] as a tensor [rows, ...] on the same buffer: a shorter chunk in
    /// a buffer sized for the longest, so pointwise kernels that take their extent from the shape touch only it.
    pub fn first_rows(&self, rows: usize) -> Result<Tensor> {
        match self.shape.split_first() {
            Some((&all, rest)) if rows <= all => {
                Ok(Tensor { shape: std::iter::once(rows).chain(rest.iter().copied()).collect(), ..self.clone() })
            }
            _ => Err(Error::shape("first_rows", format!("{rows} rows asked of `{}` {:?}", self.label, self.shape))),
        }
    }

    pub(crate) fn same_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buffer, &other.buffer)
    }

    /// The same for tensors (views) of one buffer, and only for them, while it lives.
    pub(crate) fn buffer_id(&self) -> usize {
        Arc::as_ptr(&self.buffer) as usize
    }
}

impl Context {
    /// Creates a storage tensor with the given initial bytes (or zeros when `data` is `None`), checking the size
    /// against the device's buffer and binding limits.
    pub fn tensor(&self, label: &str, shape: &[usize], dtype: DType, data: Option<&[u8]>) -> Result<Tensor> {
        match data {
            Some(data) => self.tensor_from_parts(label, shape, dtype, &[data]),
            None => self.allocate(label, shape, dtype, false),
        }
    }

    /// Creates a tensor whose bytes are `parts` one after another (fused projections, stacked experts), copying
    /// each part straight into the mapped buffer, with no staging copy on the host.
    pub fn tensor_from_parts(&self, label: &str, shape: &[usize], dtype: DType, parts: &[&[u8]]) -> Result<Tensor> {
        let bytes = dtype.storage_bytes(shape) as u64;
        let given: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if given != bytes {
            return Err(Error::shape(
                format!("upload of `{label}`"),
                format!("{shape:?} {dtype:?} needs {bytes} bytes, the parts hold {given}"),
            ));
        }
        let tensor = self.allocate(label, shape, dtype, true)?;
        let mut view = tensor
            .buffer()
            .get_mapped_range_mut(..)
            .map_err(|e| Error::Gpu { context: format!("filling `{label}`"), message: e.to_string() })?;
        let mut at = 0;
        for part in parts {
            view.slice(at..at + part.len()).copy_from_slice(part);
            at += part.len();
        }
        drop(view);
        tensor.buffer().unmap();
        self.count_upload(bytes);
        Ok(tensor)
    }

    fn allocate(&self, label: &str, shape: &[usize], dtype: DType, mapped: bool) -> Result<Tensor> {
        if let DType::Quant(format) = dtype {
            format.check_cols(&format!("`{label}`"), shape.last().copied().unwrap_or(0))?;
        }
        let bytes = dtype.storage_bytes(shape) as u64;
        let size = bytes.max(BINDING_ALIGN).next_multiple_of(BINDING_ALIGN);
        self.check_buffer_size(label, size)?;
        let buffer = self.scoped(
            || format!("allocating `{label}` ({size} bytes)"),
            || {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: mapped,
                })
            },
        )?;
        self.memory.allocate(size);
        Counters::add(&self.counts.buffers);
        let buffer = Arc::new(Allocation { buffer, memory: self.memory.clone() });
        Ok(Tensor { buffer, offset: 0, shape: shape.to_vec(), dtype, label: label.into() })
    }

    /// The part of `tensor` that starts `offset` bytes in, seen as a tensor of `shape` and `label` on the same
    /// buffer: one sequence's slot of a batch's state, which the single-sequence kernels then read and write as
    /// if it were a buffer of its own. The offset must be a multiple of the device's
    /// `min_storage_buffer_offset_alignment` (see [`Context::storage_alignment`]).
    pub fn view(&self, tensor: &Tensor, offset: u64, shape: &[usize], label: &str) -> Result<Tensor> {
        let bytes = tensor.dtype.storage_bytes(shape) as u64;
        let start = tensor.offset + offset;
        let what = || format!("view `{label}` of `{}`", tensor.label);
        if start % self.storage_alignment() != 0 {
            return Err(Error::shape(
                what(),
                format!("offset {start} is not a multiple of the storage alignment {}", self.storage_alignment()),
            ));
        }
        if bytes == 0 || offset + bytes > tensor.size_bytes() {
            return Err(Error::shape(
                what(),
                format!("{shape:?} at byte {offset} does not fit in {:?} ({} bytes)", tensor.shape, tensor.size_bytes()),
            ));
        }
        Ok(Tensor { offset: start, shape: shape.to_vec(), label: label.into(), ..tensor.clone() })
    }

    /// `tensors` copied into one buffer, each at an offset aligned for binding, and returned as views of it in
    /// order (labels, shapes and types kept): a layer's small vectors, which a decode step binds in most of its
    /// dispatches, then count as one buffer where wgpu tracks the buffers of a recording. Queued: the copies land
    /// at the next submission.
    pub fn pack(&self, label: &str, tensors: &[&Tensor]) -> Result<Vec<Tensor>> {
        let align = self.storage_alignment();
        let mut offsets = Vec::with_capacity(tensors.len());
        let mut end = 0u64;
        for t in tensors {
            let start = end.next_multiple_of(align);
            offsets.push(start);
            end = start + t.size_bytes();
        }
        let packed = self.zeros(label, &[end.div_ceil(4) as usize], DType::U32)?;
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        for (t, &at) in tensors.iter().zip(&offsets) {
            // Copies are whole words; a buffer's size is too, and the next view starts at an aligned offset.
            encoder.copy_buffer_to_buffer(t.buffer(), t.offset, packed.buffer(), at, t.size_bytes().next_multiple_of(4));
        }
        self.queue.submit([encoder.finish()]);
        let views = tensors.iter().zip(&offsets).map(|(t, &at)| Tensor {
            offset: at,
            shape: t.shape.clone(),
            dtype: t.dtype,
            label: t.label.clone(),
            ..packed.clone()
        });
        Ok(views.collect())
    }

    /// The alignment in bytes of a storage binding's offset, hence of every [`Context::view`].
    pub fn storage_alignment(&self) -> u64 {
        (self.limits().min_storage_buffer_offset_alignment as u64).max(BINDING_ALIGN)
    }

    /// A zero-filled tensor.
    pub fn zeros(&self, label: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.tensor(label, shape, dtype, None)
    }

    pub fn upload_f32(&self, label: &str, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        self.tensor(label, shape, DType::F32, Some(bytemuck::cast_slice(data)))
    }

    pub fn upload_u32(&self, label: &str, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        self.tensor(label, shape, DType::U32, Some(bytemuck::cast_slice(data)))
    }

    /// Overwrites the start of a tensor with `data` (queued; takes effect before the next submission).
    pub fn write(&self, tensor: &Tensor, data: &[u8]) -> Result<()> {
        if data.len() as u64 > tensor.extent() {
            return Err(Error::shape(
                format!("write to `{}`", tensor.label),
                format!("{} bytes do not fit in {} bytes", data.len(), tensor.extent()),
            ));
        }
        let padded;
        let data = if data.len() % 4 == 0 {
            data
        } else {
            padded = [data, &[0u8; 3][..4 - data.len() % 4]].concat();
            &padded
        };
        self.queue.write_buffer(tensor.buffer(), tensor.offset, data);
        self.count_upload(data.len() as u64);
        Ok(())
    }

    /// Copies a tensor back to the host, waiting for all queued work.
    pub fn read_bytes(&self, tensor: &Tensor) -> Result<Vec<u8>> {
        self.read_range(tensor, 0, tensor.size_bytes())
    }

    /// Copies bytes `offset..offset + len` of a tensor back to the host (both multiples of 4), waiting for all
    /// queued work. The staging buffer is kept and reused, so a per-token readback allocates nothing.
    pub fn read_range(&self, tensor: &Tensor, offset: u64, len: u64) -> Result<Vec<u8>> {
        let context = format!("reading back `{}`", tensor.label);
        if offset % 4 != 0 || offset + len > tensor.extent() {
            return Err(Error::Gpu { context, message: format!("bytes {offset}..{} out of range", offset + len) });
        }
        let size = len.max(4).next_multiple_of(4);
        let mut slot = self.readback.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|b| b.size() < size) {
            self.check_buffer_size("readback staging", size)?;
            *slot = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback staging"),
                size: size.next_power_of_two().min(self.limits().max_buffer_size).max(size),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            Counters::add(&self.counts.buffers);
        }
        let staging = slot.as_ref().expect("staging buffer was just created");
        let mut encoder = self.device.create_command_encoder(&Default::default());
        let (start, extent) = (tensor.offset + offset, tensor.extent() - offset);
        encoder.copy_buffer_to_buffer(tensor.buffer(), start, staging, 0, size.min(extent));
        self.queue.submit([encoder.finish()]);

        Counters::add(&self.counts.syncs);
        let (sender, receiver) = std::sync::mpsc::channel();
        staging.slice(..size).map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        // Another thread's poll may be the one that runs this callback, and return before it has: wait for the
        // callback itself, polling again meanwhile.
        let deadline = std::time::Instant::now() + self.timeout();
        let mapped = loop {
            self.poll_wait(&context)?;
            match receiver.recv_timeout(std::time::Duration::from_millis(5)) {
                Ok(result) => break result,
                Err(_) if std::time::Instant::now() < deadline => continue,
                Err(_) => return Err(Error::Timeout { context, seconds: self.timeout().as_secs() }),
            }
        };
        mapped.map_err(|e| Error::Gpu { context: context.clone(), message: e.to_string() })?;
        let view = staging.slice(..size).get_mapped_range().map_err(|e| Error::Gpu { context, message: e.to_string() })?;
        let data = view[..len as usize].to_vec();
        drop(view);
        staging.unmap();
        Ok(data)
    }

    pub fn read_f32(&self, tensor: &Tensor) -> Result<Vec<f32>> {
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(tensor)?))
    }

    pub fn read_u32(&self, tensor: &Tensor) -> Result<Vec<u32>> {
        Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(tensor)?))
    }

    /// Every kernel binds whole buffers as storage, so a buffer must fit both limits.
    pub fn check_buffer_size(&self, label: &str, size: u64) -> Result<()> {
        let l = self.limits();
        let too_large = |limit_name, limit| Error::BufferTooLarge { name: label.to_string(), size, limit_name, limit };
        if size > l.max_buffer_size {
            return Err(too_large("max_buffer_size", l.max_buffer_size));
        }
        if size > l.max_storage_buffer_binding_size {
            return Err(too_large("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size));
        }
        Ok(())
    }
}
