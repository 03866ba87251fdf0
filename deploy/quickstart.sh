#!/usr/bin/env bash
# A complete one-to-one video push through a running `mcvideo-relay serve` (127.0.0.1:8080):
# a camera asks to push video to a viewer, the viewer accepts, ffmpeg streams 5 s of H.264
# over SRTP through the relay, the viewer's ffmpeg writes what it received, and the call is
# released. Needs curl, python3 and ffmpeg (apt-get install -y curl ffmpeg).
set -euo pipefail
API=${API:-http://127.0.0.1:8080}
KEY=AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e  # SRTP key+salt, shared end to end (the relay never sees it used)
DIR=$(mktemp -d)
sdp() { # name port: a client's SDP, one H.264 stream over SRTP
  printf 'v=0\r\no=%s 0 0 IN IP4 127.0.0.1\r\ns=push\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video %s RTP/SAVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\na=ssrc:305419896 cname:%s\r\n' "$1" "$2" "$KEY" "$1"
}
json_string() { python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))'; }
field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }
video_port() { tr -d '\r' | sed -n 's/^m=video \([0-9]*\) .*/\1/p'; }

echo "1. the camera asks to push video to the viewer (POST /v1/calls)"
offer=$(sdp camera 30000 | json_string)
curl -sf -X POST "$API/v1/calls" -H 'content-type: application/json' -d "{
  \"call_id\": \"push-1\", \"video_push\": true,
  \"caller\": {\"mcvideo_id\": \"sip:camera@mcx.example\", \"sdp_offer\": $offer},
  \"callee\": {\"mcvideo_id\": \"sip:viewer@mcx.example\"}}" >"$DIR/created.json"
echo "   state: $(field '["state"]' <"$DIR/created.json"), the viewer is offered relay port $(field '["sdp_offer"]' <"$DIR/created.json" | video_port)"

echo "2. the viewer accepts (POST /v1/calls/push-1/answer)"
answer=$(sdp viewer 30010 | json_string)
curl -sf -X POST "$API/v1/calls/push-1/answer" -H 'content-type: application/json' \
  -d "{\"sdp_answer\": $answer}" >"$DIR/answer.json"
relay_port=$(field '["sdp_answer"]' <"$DIR/answer.json" | video_port)
echo "   state: $(field '["state"]' <"$DIR/answer.json"), the camera sends to relay port $relay_port"

echo "3. the viewer listens; the camera streams 5 s of H.264 (125 frames) to the relay"
sdp viewer 30010 >"$DIR/viewer.sdp"
ffmpeg -hide_banner -nostdin -loglevel error -listen_timeout 2 \
  -protocol_whitelist file,udp,rtp,srtp,crypto -i "$DIR/viewer.sdp" -c copy -y "$DIR/received.mkv" \
  2>"$DIR/viewer.log" &  # it stops ~4 s after the stream ends ("Connection timed out")
viewer=$!
sleep 1
ffmpeg -hide_banner -nostdin -loglevel error -re -f lavfi -i testsrc=size=640x360:rate=25 -t 5 \
  -c:v libx264 -preset ultrafast -tune zerolatency -profile:v baseline -pix_fmt yuv420p -g 25 \
  -f rtp -payload_type 96 -ssrc 305419896 -srtp_out_suite AES_CM_128_HMAC_SHA1_80 \
  -srtp_out_params "$KEY" -sdp_file "$DIR/camera.sdp" "srtp://127.0.0.1:$relay_port?pkt_size=1200"
wait "$viewer"
echo "   the viewer decoded $(ffprobe -v error -count_frames -select_streams v:0 \
  -show_entries stream=nb_read_frames -of default=nw=1:nk=1 "$DIR/received.mkv") frames"

echo "4. the call's counters (GET /v1/calls/push-1), then release (DELETE)"
curl -sf "$API/v1/calls/push-1" | python3 -c '
import json,sys; c=json.load(sys.stdin)
print("   transmission:", c["transmission"], "| caller in:", c["caller"]["packets_in"],
      "| callee out:", c["callee"]["packets_out"], "| dropped:", sum(c["caller"]["drops"].values()))'
curl -sf -X DELETE "$API/v1/calls/push-1" | python3 -c '
import json,sys; c=json.load(sys.stdin); print("   released:", c["release_reason"])'
rm -rf "$DIR"
