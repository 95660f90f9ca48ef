// TensorRT IPluginV3 wrapper of the token-merge kernel (kernels/token_merge.cu).
//
// Plugin "VlrtTokenMerge", version "1", namespace "". Attribute: r (int32 or int64), the number of
// tokens merged. Inputs: x [B, N, C] and size [B, N], float32 or float16, the same type, linear.
// Outputs: x' [B, N - r, C] and size' [B, N - r], of the input type. In an ONNX graph the node's
// op type is "VlrtTokenMerge" and its integer attribute "r".
//
// The library exports getCreators() (and setLoggerFinder()), which is what
// IPluginRegistry::loadLibrary and `trtexec --dynamicPlugins` look for. It uses only TensorRT's
// interface classes, so it needs TensorRT's headers to build and does not link libnvinfer.
// getPluginCreators() is not exported: it lists IPluginV2-style creators, and this is a V3 plugin.
#include <NvInferRuntime.h>

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "../token_merge.h"

#define VLRT_EXPORT __attribute__((visibility("default")))

namespace {

using namespace nvinfer1;

constexpr char const* kPluginName = "VlrtTokenMerge";
constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "";

// TensorRT's logger finder, asked for the logger at each message: TensorRT may hand out a different
// logger over the library's lifetime (each builder or runtime has its own), so a pointer taken at
// load time could be stale or dangling. Atomic because plugins may be used from several threads.
std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};

void logError(std::string const& message) noexcept {
    try {
        ILoggerFinder* const finder = gLoggerFinder.load(std::memory_order_acquire);
        ILogger* const logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr) logger->log(ILogger::Severity::kERROR, (std::string(kPluginName) + ": " + message).c_str());
    } catch (...) {
        // Called from TensorRT's noexcept interface methods: a failure to log must not terminate.
    }
}

class TokenMergePlugin final : public IPluginV3,
                               public IPluginV3OneCore,
                               public IPluginV3OneBuild,
                               public IPluginV3OneRuntime {
public:
    explicit TokenMergePlugin(int32_t r) : mR(r) {
        mField = PluginField("r", &mR, PluginFieldType::kINT32, 1);
        mFields.nbFields = 1;
        mFields.fields = &mField;
    }

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
            case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
            case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
            case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    IPluginV3* clone() noexcept override { return new (std::nothrow) TokenMergePlugin(mR); }

    // IPluginV3OneCore
    AsciiChar const* getPluginName() const noexcept override { return kPluginName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 2; }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        if (nbInputs != 2 || nbOutputs != 2) return -1;
        outputTypes[0] = inputTypes[0];
        outputTypes[1] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
                            int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& exprBuilder) noexcept override {
        if (nbInputs != 2 || nbOutputs != 2 || inputs[0].nbDims != 3 || inputs[1].nbDims != 2) {
            logError("expects x [B, N, C] and size [B, N]");
            return -1;
        }
        IDimensionExpr const* kept =
            exprBuilder.operation(DimensionOperation::kSUB, *inputs[0].d[1], *exprBuilder.constant(mR));
        outputs[0].nbDims = 3;
        outputs[0].d[0] = inputs[0].d[0];
        outputs[0].d[1] = kept;
        outputs[0].d[2] = inputs[0].d[2];
        outputs[1].nbDims = 2;
        outputs[1].d[0] = inputs[0].d[0];
        outputs[1].d[1] = kept;
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != 2 || nbOutputs != 2 || pos < 0 || pos >= 4) return false;
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR) return false;
        if (pos == 0) return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        return desc.type == inOut[0].desc.type;
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/,
                            int32_t nbOutputs) noexcept override {
        if (nbInputs != 2 || nbOutputs != 2) return -1;
        // N may be dynamic (-1 here); a known maximum is checked now, the actual value at onShapeChange.
        int64_t const maxTokens = in[0].max.d[1];
        return maxTokens < 0 ? 0 : checkTokens(maxTokens, true);
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/,
                          int32_t nbOutputs) noexcept override {
        if (nbInputs != 2 || nbOutputs != 2 || in[0].dims.nbDims != 3) return -1;
        return checkTokens(in[0].dims.d[1], false);
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
                    void const* const* inputs, void* const* outputs, void* /*workspace*/,
                    cudaStream_t stream) noexcept override {
        Dims const& d = inputDesc[0].dims;
        if (d.d[0] > INT_MAX || d.d[1] > INT_MAX || d.d[2] > INT_MAX) {
            logError("a dimension of x exceeds INT_MAX");
            return -1;
        }
        int const dtype = inputDesc[0].type == DataType::kHALF ? VLRT_FLOAT16 : VLRT_FLOAT32;
        int const status = vlrt_token_merge(inputs[0], inputs[1], outputs[0], outputs[1], static_cast<int>(d.d[0]),
                                            static_cast<int>(d.d[1]), static_cast<int>(d.d[2]), mR, dtype, stream);
        if (status != VLRT_OK) {
            logError(std::string("launch failed: ") + vlrt_status_string(status));
            return -1;
        }
        return 0;
    }

    IPluginV3* attachToContext(IPluginResourceContext* /*context*/) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &mFields; }

private:
    // The largest r the reference allows is ceil(N / 2) - 1; at N's maximum only the kernel's
    // token limit applies, since smaller N may come at run time.
    int32_t checkTokens(int64_t tokens, bool isMaximum) const noexcept {
        if (tokens > VLRT_TOKEN_MERGE_MAX_TOKENS) {
            logError("N = " + std::to_string(tokens) + " is above the kernel's limit of " +
                     std::to_string(VLRT_TOKEN_MERGE_MAX_TOKENS));
            return -1;
        }
        if (!isMaximum && mR > (tokens + 1) / 2 - 1) {
            logError("cannot merge r = " + std::to_string(mR) + " of N = " + std::to_string(tokens) + " tokens");
            return -1;
        }
        return 0;
    }

    int32_t mR;
    PluginField mField;
    PluginFieldCollection mFields{};
};

class TokenMergeCreator final : public IPluginCreatorV3One {
public:
    TokenMergeCreator() {
        mFieldNames = PluginField("r", nullptr, PluginFieldType::kINT32, 1);
        mFields.nbFields = 1;
        mFields.fields = &mFieldNames;
    }

    IPluginV3* createPlugin(AsciiChar const* /*name*/, PluginFieldCollection const* fc,
                            TensorRTPhase /*phase*/) noexcept override {
        int64_t r = -1;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
            PluginField const& f = fc->fields[i];
            if (f.name == nullptr || std::strcmp(f.name, "r") != 0 || f.data == nullptr || f.length != 1) continue;
            if (f.type == PluginFieldType::kINT32) r = *static_cast<int32_t const*>(f.data);
            if (f.type == PluginFieldType::kINT64) r = *static_cast<int64_t const*>(f.data);
        }
        if (r < 0 || r > VLRT_TOKEN_MERGE_MAX_TOKENS) {
            logError("needs an integer attribute r with 0 <= r <= " + std::to_string(VLRT_TOKEN_MERGE_MAX_TOKENS));
            return nullptr;
        }
        return new (std::nothrow) TokenMergePlugin(static_cast<int32_t>(r));
    }

    PluginFieldCollection const* getFieldNames() noexcept override { return &mFields; }
    AsciiChar const* getPluginName() const noexcept override { return kPluginName; }
    AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
    AsciiChar const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

private:
    PluginField mFieldNames;
    PluginFieldCollection mFields{};
};

}  // namespace

extern "C" VLRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    gLoggerFinder.store(finder, std::memory_order_release);
}

extern "C" VLRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static TokenMergeCreator creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}
