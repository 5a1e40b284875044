//! The framing of both peer ports (the Front End pool's peer link and the Back End's store protocol): a 4-byte
//! big-endian length, then that many bytes.
//!
//! [`FrameCodec`] is tokio-util's `LengthDelimitedCodec` with one difference on the reading side: memory for a
//! frame grows with the bytes that arrive, never with the length announced. `LengthDelimitedCodec` reserves the
//! whole announced length as soon as it has read the 4-byte header, so a header alone would make a node allocate up
//! to the limit. Here a header announcing more than the limit is an error at once ([`FrameTooLarge`]), so the
//! connection closes unread, and a header within the limit reserves nothing until its bytes come.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Bytes of the length prefix.
const HEADER_BYTES: usize = 4;

/// A frame announced longer than the codec's limit: the stream cannot be resynchronized, so its connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a frame of {announced} bytes announced, over the limit of {max} bytes")]
pub struct FrameTooLarge {
    pub announced: usize,
    pub max: usize,
}

impl FrameTooLarge {
    /// The `FrameTooLarge` an I/O error of a [`FrameCodec`] carries, if it is one.
    pub fn of(error: &std::io::Error) -> Option<FrameTooLarge> {
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<FrameTooLarge>())
            .copied()
    }
}

/// Length-prefixed frames of at most `max` bytes (see the module's documentation).
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max: usize,
}

impl FrameCodec {
    /// Frames of at most `max` bytes, both ways: a longer one read is [`FrameTooLarge`], a longer one written an
    /// I/O error of the writer.
    pub fn new(max: usize) -> Self {
        Self {
            inner: LengthDelimitedCodec::builder()
                .max_frame_length(max)
                .new_codec(),
            max,
        }
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        let Some(header) = src.get(..HEADER_BYTES) else {
            return Ok(None);
        };
        let announced = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
        if announced > self.max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                FrameTooLarge {
                    announced,
                    max: self.max,
                },
            ));
        }
        if src.len() < HEADER_BYTES + announced {
            // The frame is not all here: wait for more without reserving room for the rest (the reader grows its
            // buffer as bytes arrive).
            return Ok(None);
        }
        // The whole frame is in `src`, so the inner codec reserves nothing.
        self.inner.decode(src)
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        self.inner.encode(frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> BytesMut {
        let mut bytes = BytesMut::from(&(body.len() as u32).to_be_bytes()[..]);
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn frames_are_cut_at_their_length_and_wait_for_the_rest() {
        let mut codec = FrameCodec::new(16);
        let mut src = framed(b"hello");
        src.extend_from_slice(&framed(b"world")[..6]);
        assert_eq!(codec.decode(&mut src).unwrap().unwrap(), &b"hello"[..]);
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        src.extend_from_slice(b"rld");
        assert_eq!(codec.decode(&mut src).unwrap().unwrap(), &b"world"[..]);
    }

    /// Claim: a header within the limit reserves nothing for the frame's body before its bytes arrive.
    #[test]
    fn a_header_alone_reserves_nothing() {
        let mut codec = FrameCodec::new(64 << 20);
        let mut src = BytesMut::with_capacity(64);
        src.extend_from_slice(&((64u32 << 20).to_be_bytes()));
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        assert!(src.capacity() <= 64, "reserved {} bytes", src.capacity());
    }

    #[test]
    fn a_frame_at_the_limit_passes_and_one_byte_more_is_too_large() {
        let mut codec = FrameCodec::new(16);
        let mut src = framed(&[7; 16]);
        assert_eq!(codec.decode(&mut src).unwrap().unwrap().len(), 16);
        let mut src = framed(&[7; 17]);
        let error = codec.decode(&mut src).unwrap_err();
        assert_eq!(
            FrameTooLarge::of(&error),
            Some(FrameTooLarge {
                announced: 17,
                max: 16
            })
        );
        let mut out = BytesMut::new();
        assert!(codec.encode(Bytes::from(vec![7; 17]), &mut out).is_err());
    }
}
