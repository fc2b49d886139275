# One image per service: docker build --build-arg SERVICE=auth|room|presence|edge .
FROM golang:1.26 AS build
WORKDIR /src
COPY . .
ARG SERVICE
RUN CGO_ENABLED=0 go build -trimpath -o /out/service ./services/${SERVICE}/cmd/${SERVICE}

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/service /service
ENTRYPOINT ["/service"]
