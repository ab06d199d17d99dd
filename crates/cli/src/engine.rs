//! Pack and unpack: inputs cut into lanes and frames, coded round by round
//! with every lane's model requests batched together.
//!
//! Several inputs can be coded at once (`llmpack eval` does): their lanes
//! share the predictor's batches.

use std::io::{Read, Seek, SeekFrom, Write};

use anyhow::{Context, Result, bail};
use llmpack_codec::{
    ByteVocab, Coder, LaneId, LmParams, NoModel, Policy, Predictor, Stats, StreamConfig,
    StreamDecoder, StreamEncoder, Vocabulary, drive,
};
use llmpack_frame::{
    ContainerHeader, FRAME_HEADER_LEN, FrameHeader, MAX_FRAME_LEN, MAX_LANES, ModelId,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// How to pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Codec policy.
    pub policy: Policy,
    /// Largest frame.
    pub frame_len: u32,
    /// Most lanes per input.
    pub max_lanes: u16,
    /// Smallest lane worth its own context.
    pub min_lane: u64,
    /// Model context rule.
    pub lm: LmParams,
    /// zstd level of zstd frames.
    pub zstd_level: i32,
    /// zstd history per lane.
    pub zstd_history: u32,
}

impl PackOptions {
    fn header(&self, total_len: u64, model: ModelId, probe: u64) -> ContainerHeader {
        let lanes = (total_len / self.min_lane.max(1))
            .clamp(1, u64::from(self.max_lanes.clamp(1, MAX_LANES)));
        ContainerHeader {
            lanes: u16::try_from(lanes).expect("clamped to MAX_LANES"),
            frame_len: self.frame_len,
            window: self.lm.window,
            keep: self.lm.keep,
            zstd_history: self.zstd_history,
            model,
            probe,
            total_len,
        }
    }
}

fn stream_config(h: &ContainerHeader, policy: Policy, zstd_level: i32) -> StreamConfig {
    StreamConfig {
        policy,
        zstd_level,
        zstd_history: h.zstd_history,
        lm: (!h.model.is_none()).then_some(LmParams {
            window: h.window,
            keep: h.keep,
        }),
        ..StreamConfig::default()
    }
}

/// What a pack file records of its model, and what unpacking checks.
#[derive(Clone)]
pub struct ModelSpec {
    /// The model's vocabulary.
    pub vocab: Arc<dyn Vocabulary>,
    /// Its id (hashes of its files).
    pub id: ModelId,
    /// Its numeric probe on this machine ([`llmpack_codec::numeric_probe`]).
    pub probe: u64,
}

/// The model side of a run: a predictor and what identifies it.
pub struct ModelHandle<'a> {
    /// The predictor.
    pub predictor: &'a mut dyn Predictor,
    /// Its identity.
    pub spec: ModelSpec,
}

/// Random access to an input.
pub trait Source {
    /// Fills `buf` from offset `at`.
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl Source for &[u8] {
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let at = usize::try_from(at).map_err(std::io::Error::other)?;
        let src = self
            .get(at..at + buf.len())
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl Source for std::fs::File {
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.seek(SeekFrom::Start(at))?;
        self.read_exact(buf)
    }
}

/// Random-access output that can be read back.
pub trait Sink {
    /// Writes `buf` at offset `at`.
    fn write_at(&mut self, at: u64, buf: &[u8]) -> std::io::Result<()>;
    /// Feeds everything written, in order, to `h`.
    fn hash_into(&mut self, h: &mut Sha256) -> std::io::Result<()>;
}

impl Sink for &mut Vec<u8> {
    fn write_at(&mut self, at: u64, buf: &[u8]) -> std::io::Result<()> {
        let at = usize::try_from(at).map_err(std::io::Error::other)?;
        if self.len() < at + buf.len() {
            self.resize(at + buf.len(), 0);
        }
        self[at..at + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn hash_into(&mut self, h: &mut Sha256) -> std::io::Result<()> {
        h.update(&self[..]);
        Ok(())
    }
}

impl Sink for std::fs::File {
    fn write_at(&mut self, at: u64, buf: &[u8]) -> std::io::Result<()> {
        self.seek(SeekFrom::Start(at))?;
        self.write_all(buf)
    }

    fn hash_into(&mut self, h: &mut Sha256) -> std::io::Result<()> {
        self.flush()?;
        self.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = self.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            h.update(&buf[..n]);
        }
    }
}

/// Byte progress of one lane.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    next: u64,
    end: u64,
}

impl Cursor {
    fn chunk(&self, frame_len: u32) -> Option<(u64, usize)> {
        (self.next < self.end).then(|| {
            let n = llmpack_frame::next_frame_len(self.end - self.next, frame_len);
            (self.next, usize::try_from(n).expect("<= MAX_FRAME_LEN"))
        })
    }
}

/// One input being packed.
pub struct PackJob<'a> {
    header: ContainerHeader,
    encoders: Vec<StreamEncoder>,
    cursors: Vec<Cursor>,
    src: Box<dyn Source + 'a>,
    out: Box<dyn Write + 'a>,
    /// Bytes written to `out` so far.
    pub written: u64,
    /// Original bytes coded so far.
    pub done: u64,
}

impl<'a> PackJob<'a> {
    /// Starts packing `total_len` bytes from `src` into `out` (writes the header).
    pub fn new(
        job: u64,
        opts: &PackOptions,
        model: Option<&ModelSpec>,
        total_len: u64,
        src: Box<dyn Source + 'a>,
        mut out: Box<dyn Write + 'a>,
    ) -> Result<Self> {
        if opts.frame_len == 0 || opts.frame_len > MAX_FRAME_LEN {
            bail!("frame size must be 1 byte to {} KiB", MAX_FRAME_LEN >> 10);
        }
        let model = model.filter(|_| opts.policy.uses_model());
        let header = match model {
            Some(m) => opts.header(total_len, m.id, m.probe),
            None => opts.header(total_len, ModelId::NONE, 0),
        };
        header.validate().context("pack options")?;
        let vocab: Arc<dyn Vocabulary> = match model {
            Some(m) => m.vocab.clone(),
            None => Arc::new(ByteVocab::default()),
        };
        let cfg = stream_config(&header, opts.policy, opts.zstd_level);
        let encoders = (0..header.lanes)
            .map(|i| StreamEncoder::new(lane_id(job, i), cfg.clone(), vocab.clone(), b""))
            .collect();
        let cursors = (0..header.lanes)
            .map(|i| {
                let (next, end) = header.lane_range(i);
                Cursor { next, end }
            })
            .collect();
        let mut h = Vec::with_capacity(ContainerHeader::LEN);
        header.encode(&mut h);
        out.write_all(&h)?;
        Ok(PackJob {
            header,
            encoders,
            cursors,
            src,
            out,
            written: h.len() as u64,
            done: 0,
        })
    }

    /// Pushes the next frame of every lane that has bytes left. `false` when
    /// the input is exhausted.
    fn begin_round(&mut self) -> Result<bool> {
        let mut any = false;
        for (e, c) in self.encoders.iter_mut().zip(&mut self.cursors) {
            if let Some((at, n)) = c.chunk(self.header.frame_len) {
                let mut buf = vec![0u8; n];
                self.src
                    .read_at(at, &mut buf)
                    .context("reading the input")?;
                c.next += n as u64;
                e.push(buf);
                any = true;
            }
        }
        Ok(any)
    }

    /// Writes the round's frames in lane order.
    fn end_round(&mut self) -> Result<()> {
        let mut buf = Vec::new();
        for e in &mut self.encoders {
            if let Some(f) = e.take_frame() {
                self.done += u64::from(f.header.orig_len);
                f.write_to(&mut buf);
            }
        }
        self.out.write_all(&buf).context("writing the pack")?;
        self.written += buf.len() as u64;
        Ok(())
    }

    /// Writes the trailer: SHA-256 of the whole input, hashed from `src`.
    fn finish(&mut self) -> Result<()> {
        let mut h = Sha256::new();
        let mut at = 0;
        let mut buf = vec![0u8; 1 << 20];
        while at < self.header.total_len {
            let n = usize::try_from((self.header.total_len - at).min(1 << 20)).expect("<= 1 MiB");
            self.src
                .read_at(at, &mut buf[..n])
                .context("reading the input")?;
            h.update(&buf[..n]);
            at += n as u64;
        }
        self.out
            .write_all(&h.finalize())
            .context("writing the pack")?;
        self.out.flush()?;
        self.written += 32;
        Ok(())
    }

    /// Counts of all lanes.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for e in &self.encoders {
            s.merge(&e.stats());
        }
        s
    }

    /// The header written.
    pub fn header(&self) -> &ContainerHeader {
        &self.header
    }
}

fn lane_id(job: u64, lane: u16) -> LaneId {
    (job << 16) | u64::from(lane)
}

/// Runs pack jobs to the end, batching all their lanes together.
/// `progress(original bytes done)` is called after every model batch and round.
pub fn run_pack(
    model: Option<&mut ModelHandle<'_>>,
    jobs: &mut [PackJob<'_>],
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    run_rounds(model, jobs, progress)
}

/// A pack or unpack job, as [`run_rounds`] drives it.
trait Job {
    type Coder: Coder;
    /// Pushes the next frame of every lane that has one; `false` when done.
    fn begin_round(&mut self) -> Result<bool>;
    /// The job's coders, one per lane.
    fn coders(&mut self) -> &mut [Self::Coder];
    /// Takes the round's outputs.
    fn end_round(&mut self) -> Result<()>;
    /// Writes or checks the trailer.
    fn finish(&mut self) -> Result<()>;
    /// Original bytes done.
    fn done(&self) -> u64;
    /// Lanes of the job.
    fn lanes(&self) -> u16;
}

/// Runs jobs round by round; each round's coders share model batches.
fn run_rounds<J: Job>(
    model: Option<&mut ModelHandle<'_>>,
    jobs: &mut [J],
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut none = NoModel;
    let predictor: &mut dyn Predictor = match model {
        Some(m) => &mut *m.predictor,
        None => &mut none,
    };
    loop {
        let mut any = false;
        for j in jobs.iter_mut() {
            any |= j.begin_round()?;
        }
        if !any {
            break;
        }
        let base: u64 = jobs.iter().map(Job::done).sum();
        let mut coders: Vec<&mut J::Coder> = jobs
            .iter_mut()
            .flat_map(|j| j.coders().iter_mut())
            .filter(|c| c.busy())
            .collect();
        drive(predictor, &mut coders, &mut |_| progress(base)).context("running the model")?;
        for j in jobs.iter_mut() {
            j.end_round()?;
        }
        progress(jobs.iter().map(Job::done).sum());
    }
    for (n, j) in jobs.iter_mut().enumerate() {
        j.finish()?;
        for i in 0..j.lanes() {
            predictor.release(lane_id(n as u64, i));
        }
    }
    Ok(())
}

impl<'a> Job for PackJob<'a> {
    type Coder = StreamEncoder;
    fn begin_round(&mut self) -> Result<bool> {
        PackJob::begin_round(self)
    }
    fn coders(&mut self) -> &mut [StreamEncoder] {
        &mut self.encoders
    }
    fn end_round(&mut self) -> Result<()> {
        PackJob::end_round(self)
    }
    fn finish(&mut self) -> Result<()> {
        PackJob::finish(self)
    }
    fn done(&self) -> u64 {
        self.done
    }
    fn lanes(&self) -> u16 {
        self.header.lanes
    }
}

impl<'a> Job for UnpackJob<'a> {
    type Coder = StreamDecoder;
    fn begin_round(&mut self) -> Result<bool> {
        UnpackJob::begin_round(self)
    }
    fn coders(&mut self) -> &mut [StreamDecoder] {
        &mut self.decoders
    }
    fn end_round(&mut self) -> Result<()> {
        UnpackJob::end_round(self)
    }
    fn finish(&mut self) -> Result<()> {
        UnpackJob::finish(self)
    }
    fn done(&self) -> u64 {
        self.done
    }
    fn lanes(&self) -> u16 {
        self.header.lanes
    }
}

/// One pack file being unpacked.
pub struct UnpackJob<'a> {
    header: ContainerHeader,
    decoders: Vec<StreamDecoder>,
    cursors: Vec<Cursor>,
    src: Box<dyn Read + 'a>,
    out: Box<dyn Sink + 'a>,
    /// Original bytes restored so far.
    pub done: u64,
}

/// Reads a pack file's header.
pub fn read_header(src: &mut dyn Read) -> Result<ContainerHeader> {
    let mut buf = vec![0u8; ContainerHeader::LEN];
    read_full(src, &mut buf, "the pack header")?;
    Ok(ContainerHeader::decode(&mut &buf[..])?)
}

fn read_full(src: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<()> {
    src.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            anyhow::anyhow!("pack file is truncated: it ends inside {what}")
        } else {
            anyhow::Error::new(e).context(format!("reading {what}"))
        }
    })
}

impl<'a> UnpackJob<'a> {
    /// Starts unpacking a file whose header was read with [`read_header`].
    /// Refuses a file coded with another model than `model`.
    pub fn new(
        job: u64,
        header: ContainerHeader,
        model: Option<&ModelSpec>,
        src: Box<dyn Read + 'a>,
        out: Box<dyn Sink + 'a>,
    ) -> Result<Self> {
        let vocab: Arc<dyn Vocabulary> = if header.model.is_none() {
            Arc::new(ByteVocab::default())
        } else {
            match model {
                None => bail!(
                    "this file was packed with the language model {}; pass --model DIR of that model",
                    header.model
                ),
                Some(m) if m.id != header.model => bail!(
                    "this file was packed with model {} but the loaded model is {}; unpack it with the model it was packed with (--model DIR)",
                    header.model,
                    m.id
                ),
                Some(m) if m.probe != header.probe => bail!(
                    "this file was packed with the same model {} but on a machine whose model arithmetic differs from this one \
                     (numeric probe {:016x} there, {:016x} here: other CPU features or ONNX Runtime build); \
                     its lm frames cannot be decoded bit-exactly here. Unpack it on a machine like the one that packed it",
                    m.id,
                    header.probe,
                    m.probe
                ),
                Some(m) => m.vocab.clone(),
            }
        };
        let cfg = stream_config(&header, Policy::Auto, 0);
        let decoders = (0..header.lanes)
            .map(|i| StreamDecoder::new(lane_id(job, i), &cfg, vocab.clone(), b""))
            .collect();
        let cursors = (0..header.lanes)
            .map(|i| {
                let (next, end) = header.lane_range(i);
                Cursor { next, end }
            })
            .collect();
        Ok(UnpackJob {
            header,
            decoders,
            cursors,
            src,
            out,
            done: 0,
        })
    }

    fn begin_round(&mut self) -> Result<bool> {
        let mut any = false;
        for (i, (d, c)) in self.decoders.iter_mut().zip(&self.cursors).enumerate() {
            let Some((at, n)) = c.chunk(self.header.frame_len) else {
                continue;
            };
            let mut hb = [0u8; FRAME_HEADER_LEN];
            read_full(&mut *self.src, &mut hb, "a frame header")?;
            let h = FrameHeader::decode(&mut &hb[..])
                .with_context(|| format!("frame of lane {i} at input offset {at}"))?;
            if h.orig_len as usize != n {
                bail!(
                    "corrupt pack: frame of lane {i} at offset {at} says {} bytes, the layout says {n}",
                    h.orig_len
                );
            }
            // payload_len <= MAX_PAYLOAD_LEN: bounded by the header checks.
            let mut payload = vec![0u8; h.payload_len as usize];
            read_full(&mut *self.src, &mut payload, "a frame payload")?;
            d.push(h, payload);
            any = true;
        }
        Ok(any)
    }

    fn end_round(&mut self) -> Result<()> {
        for (i, (d, c)) in self.decoders.iter_mut().zip(&mut self.cursors).enumerate() {
            if let Some(out) = d.take_output() {
                let data = out.with_context(|| {
                    format!(
                        "corrupt pack: frame of lane {i} at offset {} does not decode",
                        c.next
                    )
                })?;
                self.out
                    .write_at(c.next, &data)
                    .context("writing the output")?;
                c.next += data.len() as u64;
                self.done += data.len() as u64;
            }
        }
        Ok(())
    }

    /// Reads the trailer and checks it against the hash of the output.
    fn finish(&mut self) -> Result<()> {
        let mut want = [0u8; 32];
        read_full(&mut *self.src, &mut want, "the trailer")?;
        let mut extra = [0u8; 1];
        if self.src.read(&mut extra)? != 0 {
            bail!("corrupt pack: data after the trailer");
        }
        let mut h = Sha256::new();
        self.out
            .hash_into(&mut h)
            .context("reading back the output")?;
        if h.finalize()[..] != want {
            bail!("corrupt pack: the restored data does not match the file's SHA-256");
        }
        Ok(())
    }
}

/// Runs unpack jobs to the end, checking every job's trailer.
pub fn run_unpack(
    model: Option<&mut ModelHandle<'_>>,
    jobs: &mut [UnpackJob<'_>],
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    run_rounds(model, jobs, progress)
}
